"""Bad input to ``convjax predict`` / ``eval``: refused with one line, or warned about.

Non-finite and out-of-range pixels are refused (never zeroed or clipped), arrays of another
size are resized exactly as image files are, pixels far from the training data's statistics
get a warning, unreadable inputs and unknown splits give one ``convjax: error:`` line, and
class names come from ``data_info.json``.
"""

import json
import os
import shutil

import numpy as np
import pytest

from convjax.__main__ import main
from convjax.data import DataError, load_dataset
from convjax.train.inference import (
    EVAL_SPLITS,
    InputError,
    check_value_range,
    format_prediction,
    load_inputs,
    predict,
)
from convjax.train.loop import train


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A finished tiny digits run (digits_cnn at width 4, 4 steps, 8 CPU devices)."""
    path = tmp_path_factory.mktemp("run")
    train(
        {
            "model_kwargs": {"widths": (4,)},
            "batch_size": 16,
            "num_steps": 4,
            "eval_every": 0,
            "progress": False,
            "workdir": str(path),
        }
    )
    return str(path)


@pytest.fixture(scope="module")
def info(workdir):
    with open(os.path.join(workdir, "data_info.json"), encoding="utf-8") as f:
        return json.load(f)


def _digits(n=5):
    """The first ``n`` test digits as stored (uint8 0..255, (n, 8, 8, 1))."""
    test = load_dataset("digits").test
    return np.stack([test[i]["image"] for i in range(n)])


def _cli(capsys, *args):
    """``convjax <args>`` -> (exit status, stdout lines, stderr lines)."""
    status = main(["convjax", *args])
    captured = capsys.readouterr()
    return status, captured.out.splitlines(), captured.err.splitlines()


# ------------------------------------------------------------------------------ refused inputs


def test_nonfinite_pixels_are_refused_with_their_count(workdir, tmp_path, capsys):
    images = _digits().astype(np.float32)
    images[0, 2, 3] = np.nan
    images[0, 4, 4] = np.inf
    images[3, 1, 1] = -np.inf
    path = tmp_path / "nan.npy"
    np.save(path, images)
    with pytest.raises(InputError, match=r"3 non-finite pixel value\(s\) .* in 2 of 5 image"):
        predict(workdir, [str(path)])
    status, out, err = _cli(capsys, "predict", f"--workdir={workdir}", str(path))
    assert status == 1 and out == []
    assert err == [
        f"convjax: error: {path}: 3 non-finite pixel value(s) (NaN or inf) in 2 of 5 image(s); "
        "predict needs finite pixels."
    ]


def test_out_of_range_pixels_are_refused_not_clipped(workdir, tmp_path, capsys):
    images = _digits().astype(np.float64)
    images[0, 0, 0], images[1, 0, 0] = -5.0, 1e12
    path = tmp_path / "range.npy"
    np.save(path, images)
    status, out, err = _cli(capsys, "predict", f"--workdir={workdir}", str(path))
    assert status == 1 and out == [] and len(err) == 1
    assert err[0].startswith(
        f"convjax: error: {path}: 2 pixel value(s) outside 0..255 (min -5, max 1e+12)"
    )
    # Integers too (int64 digits beyond a byte).
    np.save(tmp_path / "int.npy", _digits().astype(np.int64) * 2)
    with pytest.raises(InputError, match=r"outside 0..255 \(min 0, max 5\d\d\)"):
        load_inputs([str(tmp_path / "int.npy")], (8, 8, 1))


@pytest.mark.parametrize(
    "kind", ["empty.npy", "empty.png", "corrupt.npy", "corrupt.png", "dir", "missing.png"]
)
def test_unreadable_inputs_give_one_line(workdir, tmp_path, capsys, kind):
    path = tmp_path / kind
    if kind == "missing.png":
        want = f"no such input file: {path}"
    elif kind == "dir":
        path.mkdir()
        want = f"{path} is a directory; predict takes image, IDX or .npy/.npz files"
    elif kind.startswith("empty"):
        path.write_bytes(b"")
        want = f"{path}: empty file (0 bytes)."
    elif kind == "corrupt.npy":
        path.write_bytes(b"\x93NUMPY" + b"garbage" * 8)
        want = f"{path}: not a readable NumPy file ("
    else:
        buffer = tmp_path / "ok.png"
        from PIL import Image

        Image.fromarray(_digits(1)[0, ..., 0]).resize((64, 64)).save(buffer)
        path.write_bytes(buffer.read_bytes()[:60])  # a truncated PNG
        want = f"{path}: not a readable image file ("
    status, out, err = _cli(capsys, "predict", f"--workdir={workdir}", str(path))
    assert status == 1 and out == [] and len(err) == 1, err
    assert err[0].startswith(f"convjax: error: {want}"), err
    assert isinstance(InputError(""), DataError)  # the CLI's one-line data errors


def test_wrong_shapes_and_dtypes_give_one_line(tmp_path):
    np.save(tmp_path / "cube.npy", np.zeros((2, 3, 8, 8, 1), np.uint8))
    with pytest.raises(
        InputError, match=r"cube.npy: expected images .*got shape \(2, 3, 8, 8, 1\)"
    ):
        load_inputs([str(tmp_path / "cube.npy")], (8, 8, 1))
    np.save(tmp_path / "text.npy", np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(InputError, match=r"text.npy: pixels of dtype <U1"):
        load_inputs([str(tmp_path / "text.npy")], (8, 8, 1))
    np.savez(tmp_path / "none.npz")
    with pytest.raises(InputError, match=r"none.npz: the .npz file holds no arrays"):
        load_inputs([str(tmp_path / "none.npz")], (8, 8, 1))


def test_eval_unknown_split_lists_the_splits(workdir, capsys):
    status, out, err = _cli(capsys, "eval", f"--workdir={workdir}", "--split=val")
    assert status == 1 and out == []
    assert err == [
        "convjax: error: unknown split 'val' for dataset 'digits'; its splits are "
        f"{', '.join(EVAL_SPLITS)} (--split=test is the run's evaluation split)."
    ]


# ------------------------------------------------------------------------------ accepted inputs


def test_scales_of_the_same_images_agree(workdir, tmp_path):
    """uint8, 0..1 floats and 0..255 floats of the same digits predict the same."""
    images = _digits()
    np.save(tmp_path / "u8.npy", images)
    np.save(tmp_path / "unit.npy", images.astype(np.float32) / 255.0)
    np.save(tmp_path / "f255.npy", images.astype(np.float64))
    base = load_inputs([str(tmp_path / "u8.npy")], (8, 8, 1))
    for name in ("unit.npy", "f255.npy"):
        np.testing.assert_array_equal(load_inputs([str(tmp_path / name)], (8, 8, 1)), base)
    top = predict(workdir, [str(tmp_path / "u8.npy")])
    assert predict(workdir, [str(tmp_path / "unit.npy")]) == top


def test_arrays_are_resized_as_image_files_are(workdir, tmp_path, capsys):
    """A 5x7 array and a 5x7 PNG of the same pixels give the same 8x8 input (with a warning
    for the array, whose size the user may not expect to change)."""
    from PIL import Image

    small = np.random.default_rng(0).integers(0, 256, (5, 7), dtype=np.uint8)
    np.save(tmp_path / "small.npy", small)
    Image.fromarray(small).save(tmp_path / "small.png")
    warnings = []
    from_array = load_inputs([str(tmp_path / "small.npy")], (8, 8, 1), warn=warnings.append)
    from_image = load_inputs([str(tmp_path / "small.png")], (8, 8, 1), warn=warnings.append)
    assert from_array.shape == from_image.shape == (1, 8, 8, 1)
    np.testing.assert_array_equal(from_array, from_image)
    assert warnings == [
        f"{tmp_path / 'small.npy'}: resized 1 image(s) from 5x7 to 8x8 (bilinear, as image "
        "files are)."
    ]
    status, out, err = _cli(capsys, "predict", f"--workdir={workdir}", str(tmp_path / "small.npy"))
    assert status == 0 and len(out) == 1 and out[0].startswith("small.npy: ")
    assert err == [f"convjax: warning: {warnings[0]}"]


def test_pixels_far_from_the_training_data_warn(workdir, info, tmp_path, capsys):
    """Digits on their own 0..16 scale warn; the training data's own images never do."""
    from sklearn.datasets import load_digits

    raw = load_digits().images[:5]  # floats 0..16
    np.save(tmp_path / "digits16.npy", raw)
    status, out, err = _cli(
        capsys, "predict", f"--workdir={workdir}", str(tmp_path / "digits16.npy")
    )
    assert status == 0 and len(out) == 5
    assert len(err) == 1 and err[0].startswith(f"convjax: warning: {tmp_path / 'digits16.npy'}: ")
    assert "another scale (e.g. 0..16" in err[0]
    assert f"training images' mean {info['mean'][0]:.3f}, std {info['std'][0]:.3f}" in err[0]
    # On the 0..255 scale: no warning; and no single test digit of the dataset warns either.
    np.save(tmp_path / "digits255.npy", np.round(raw * 255 / 16).astype(np.uint8))
    status, _, err = _cli(
        capsys, "predict", f"--workdir={workdir}", str(tmp_path / "digits255.npy")
    )
    assert status == 0 and err == []
    test = load_dataset("digits").test
    for i in range(len(test)):
        image = np.asarray(test[i]["image"])[None]
        assert check_value_range(image, info["mean"], info["std"]) is None, i
        assert check_value_range(image // 16, info["mean"], info["std"]) is not None, i
    # Blank and inverted-contrast extremes.
    assert check_value_range(np.zeros((1, 8, 8, 1), np.uint8), info["mean"], info["std"])
    assert check_value_range(np.full((1, 8, 8, 1), 255, np.uint8), info["mean"], info["std"])


def test_class_names_come_from_data_info(workdir, tmp_path, capsys):
    run = tmp_path / "named"
    shutil.copytree(workdir, run)
    with open(run / "data_info.json", encoding="utf-8") as f:
        info = json.load(f)
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    info["class_names"] = names
    with open(run / "data_info.json", "w", encoding="utf-8") as f:
        json.dump(info, f)
    np.save(tmp_path / "d.npy", _digits())
    top = predict(str(run), [str(tmp_path / "d.npy")], top_k=2)
    status, out, _ = _cli(
        capsys, "predict", f"--workdir={run}", "--top_k=2", str(tmp_path / "d.npy")
    )
    assert status == 0
    assert out == [
        f"d.npy[{i}]: {row[0][0]} {names[row[0][0]]} ({row[0][1]:.3f}), "
        f"{row[1][0]} {names[row[1][0]]} ({row[1][1]:.3f})"
        for i, row in enumerate(top)
    ]
    # Without names (digits stores none): the index alone, as before.
    assert format_prediction(top[0]) == ", ".join(f"{c} ({p:.3f})" for c, p in top[0])
