"""grain pipelines: sharding, shuffling, exact resume, eval coverage, make_loaders."""

import grain
import numpy as np
import pytest

from convjax.data import (
    ArraySource,
    DataError,
    DatasetInfo,
    ImageTransform,
    default_config,
    eval_loader,
    load_dataset,
    make_loaders,
    train_dataset,
)

SYNC = grain.ReadOptions(num_threads=0, prefetch_buffer_size=1)
THREADS = grain.ReadOptions(num_threads=2, prefetch_buffer_size=3)


@pytest.fixture(scope="module")
def toy():
    """50 distinct 6x6x2 images whose pixel (0, 0, 0) encodes the record index."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (50, 6, 6, 2), dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(50)
    labels = np.arange(50) % 5
    info = DatasetInfo("toy", 5, (6, 6, 2), 50, 50, (0.5, 0.25), (0.2, 0.4), flip=True)
    return ArraySource(images, labels, 5, name="toy"), info


def _batches(iterator, count):
    return [next(iterator) for _ in range(count)]


def test_each_epoch_is_a_seeded_shuffle_and_stream_is_deterministic(toy):
    source, info = toy
    t = ImageTransform(info, train=True, crop_padding=1, flip=True)
    ds, steps = train_dataset(source, t, seed=3, batch_size=8, with_index=True, read_options=SYNC)
    assert steps == 6  # 50 // 8, drop_remainder
    it = iter(ds)
    epochs = [np.concatenate([b["index"] for b in _batches(it, steps)]) for _ in range(3)]
    for e in epochs:
        assert len(set(e.tolist())) == 48  # no repeats inside an epoch
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
    again, _ = train_dataset(source, t, seed=3, batch_size=8, with_index=True, read_options=THREADS)
    a, b = _batches(iter(again), 7), _batches(iter(ds), 7)
    for x, y in zip(a, b):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
    other, _ = train_dataset(source, t, seed=4, batch_size=8, with_index=True, read_options=SYNC)
    assert not np.array_equal(next(iter(other))["index"], a[0]["index"])
    assert a[0]["image"].dtype == np.float32 and a[0]["label"].dtype == np.int32
    np.testing.assert_array_equal(a[0]["label"], a[0]["index"] % 5)


def test_process_shards_partition_each_global_batch(toy):
    source, info = toy
    t = ImageTransform(info, train=True, crop_padding=2, flip=True)
    processes, per_process, steps = 3, 4, 4  # global batch 12, 50 // 12 = 4 steps per epoch
    single, n_steps = train_dataset(
        source, t, seed=7, batch_size=12, with_index=True, read_options=SYNC
    )
    assert n_steps == steps
    reference = _batches(iter(single), 2 * steps)  # two epochs on one process
    shards = []
    for p in range(processes):
        ds, n = train_dataset(
            source,
            t,
            seed=7,
            batch_size=per_process,
            process_index=p,
            process_count=processes,
            with_index=True,
            read_options=SYNC,
        )
        assert n == steps
        shards.append(_batches(iter(ds), 2 * steps))
    for step in range(2 * steps):
        parts = [shards[p][step] for p in range(processes)]
        for key in ("index", "image", "label"):
            joined = np.concatenate([part[key] for part in parts])
            np.testing.assert_array_equal(joined, reference[step][key])
    for epoch in range(2):
        seen = [
            np.concatenate(
                [shards[p][s]["index"] for s in range(epoch * steps, (epoch + 1) * steps)]
            )
            for p in range(processes)
        ]
        union = np.concatenate(seen)
        assert len(union) == len(set(union.tolist())) == processes * per_process * steps
        assert set(union.tolist()) <= set(range(50))


def test_shards_cover_the_whole_split_when_it_divides(toy):
    source, info = toy
    t = ImageTransform(info, train=True, augment=False)
    seen = []
    for p in range(5):
        ds, steps = train_dataset(
            source, t, seed=1, batch_size=5, process_index=p, process_count=5, with_index=True
        )
        assert steps == 2
        seen.append(np.concatenate([b["index"] for b in _batches(iter(ds), steps)]))
    assert sorted(np.concatenate(seen).tolist()) == list(range(50))


def test_iterator_state_resumes_exactly_across_epochs(toy):
    source, info = toy
    t = ImageTransform(info, train=True, crop_padding=1, flip=True)
    ds, steps = train_dataset(source, t, seed=11, batch_size=8, read_options=THREADS)
    it = iter(ds)
    _batches(it, 4)
    state = it.get_state()
    expected = _batches(it, steps + 2)  # crosses an epoch boundary
    resumed = iter(ds)
    next(resumed)
    resumed.set_state(state)
    for x, y in zip(_batches(resumed, steps + 2), expected):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["label"], y["label"])


def test_finite_epochs_stop(toy):
    source, info = toy
    t = ImageTransform(info, train=True, augment=False)
    ds, steps = train_dataset(source, t, seed=0, batch_size=16, num_epochs=2, read_options=SYNC)
    assert len(list(ds)) == 2 * steps == 6


def test_normalisation_without_augmentation_matches_reference(toy):
    source, info = toy
    t = ImageTransform(info, train=True, augment=False)
    ds, _ = train_dataset(source, t, seed=0, batch_size=10, with_index=True, read_options=SYNC)
    batch = next(iter(ds))
    raw = source.images[batch["index"]].astype(np.float64)
    want = (raw / 255 - np.array(info.mean)) / np.array(info.std)
    np.testing.assert_allclose(batch["image"], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("processes", [1, 3])
def test_eval_covers_every_example_exactly_once(toy, processes):
    source, info = toy
    t = ImageTransform(info, train=False)
    counts = np.zeros(50, int)
    lengths = set()
    for p in range(processes):
        loader = eval_loader(
            source, t, batch_size=7, process_index=p, process_count=processes, with_index=True
        )
        lengths.add(len(loader))
        batches = list(loader)
        assert len(batches) == len(loader)
        for b in batches:
            assert b["image"].shape == (7, 6, 6, 2) and b["mask"].dtype == np.bool_
            idx = b["index"][b["mask"]]
            np.add.at(counts, idx, 1)
            np.testing.assert_array_equal(b["label"][b["mask"]], idx % 5)
            assert np.all(b["index"][~b["mask"]] == -1)
        assert len(list(loader)) == len(batches)  # re-iterable
    assert lengths == {int(np.ceil(50 / (7 * processes)))}  # same count on every process
    np.testing.assert_array_equal(counts, np.ones(50, int))


def test_make_loaders_with_config_and_sequences(toy):
    cfg = default_config()
    cfg.name = "digits"
    cfg.num_threads = 0
    cfg.eval_batch_size = 100
    train, evaluation, info = make_loaders(
        cfg, seed=0, global_batch_size=64, process_index=1, process_count=2
    )
    batch = next(train)
    assert batch["image"].shape == (32, 8, 8, 1) and batch["label"].shape == (32,)
    assert info.steps_per_epoch == 1437 // 64 and info.input_shape == (8, 8, 1)
    assert len(evaluation) == 4 and next(iter(evaluation))["image"].shape == (
        50,
        8,
        8,
        1,
    )  # 360/100
    state = train.get_state()
    following = next(train)
    train.set_state(state)
    np.testing.assert_array_equal(next(train)["image"], following["image"])

    flat = make_loaders(
        {"name": "digits", "sequence": "flatten", "num_threads": 0},
        seed=5,
        global_batch_size=16,
        process_index=0,
        process_count=1,
    )
    perm = make_loaders(
        {"name": "digits", "sequence": "permute", "permutation_seed": 2, "num_threads": 0},
        seed=5,
        global_batch_size=16,
        process_index=0,
        process_count=1,
    )
    assert flat.info.input_shape == perm.info.input_shape == (64, 1)
    assert flat.info.sequence == "flatten"
    b_flat, b_perm = next(flat.train), next(perm.train)
    np.testing.assert_array_equal(b_flat["label"], b_perm["label"])  # same examples
    from convjax.data import pixel_permutation

    order = pixel_permutation(64, seed=2)
    np.testing.assert_array_equal(b_perm["image"], b_flat["image"][:, order])
    # sequences are not augmented by default: eval-style flatten of the same records
    digits = load_dataset("digits")
    t = ImageTransform(digits.info, train=False, sequence="flatten")
    eval_batch = next(iter(flat.eval))
    np.testing.assert_array_equal(eval_batch["image"][:3], t(digits.test.images[:3], None))


def test_make_loaders_argument_errors():
    kwargs = dict(seed=0, process_index=0, process_count=1)
    with pytest.raises(ValueError, match="unknown data config field"):
        make_loaders({"name": "digits", "batchsize": 3}, global_batch_size=8, **kwargs)
    with pytest.raises(ValueError, match="divisible by process_count=3"):
        make_loaders("digits", seed=0, global_batch_size=8, process_index=0, process_count=3)
    with pytest.raises(ValueError, match="process_index must be < process_count"):
        make_loaders("digits", seed=0, global_batch_size=8, process_index=2, process_count=2)
    with pytest.raises(ValueError, match="sequence"):
        make_loaders({"sequence": "spiral"}, global_batch_size=8, **kwargs)
    with pytest.raises(ValueError, match="'flip' must be"):
        make_loaders({"flip": "maybe"}, global_batch_size=8, **kwargs)
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        make_loaders("digits", seed=-1, global_batch_size=8, process_index=0, process_count=1)
    with pytest.raises(DataError, match="'digits'.*1437 examples, fewer than one global batch"):
        make_loaders("digits", global_batch_size=2048, **kwargs)
    with pytest.raises(TypeError, match="data config must be"):
        make_loaders(3.5, global_batch_size=8, **kwargs)


def test_plain_record_sources_work(toy):
    """Any object with len() and [i] -> {"image", "label"} works (no get_batch needed)."""
    source, info = toy

    class ListSource:
        def __len__(self):
            return len(source)

        def __getitem__(self, i):
            return {"image": source.images[i], "label": int(source.labels[i])}

    t = ImageTransform(info, train=True, crop_padding=1, flip=True)
    a, _ = train_dataset(ListSource(), t, seed=2, batch_size=8, read_options=SYNC)
    b, _ = train_dataset(source, t, seed=2, batch_size=8, read_options=SYNC)
    for x, y in zip(_batches(iter(a), 3), _batches(iter(b), 3)):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["label"], y["label"])
