"""Checkpointer: exact round trip of a train state with empty subtrees, iterator state kinds,
latest step and retention, and a clear error for a checkpoint of another model."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from convjax.train.checkpoint import Checkpointer
from convjax.train.state import create_train_state
from tests.train.common import trees_equal


def _state(width=3, seed=0):
    rs = np.random.RandomState(seed)
    params = {"dense": {"kernel": jnp.asarray(rs.randn(2, width), jnp.float32)}}
    stats = {"bn": {"mean": jnp.asarray(rs.randn(width), jnp.float32)}}
    tx = optax.chain(optax.add_decayed_weights(1e-4), optax.sgd(0.1, momentum=0.9))
    # No learned padding: empty pad_params and an (empty) padding optimizer state.
    return create_train_state(params, {}, stats, tx, optax.adam(1e-3), seed)


@pytest.mark.parametrize("data_state", [{"next_index": 7}, b"\x00\x01bytes", None])
def test_round_trip_is_exact(tmp_path, data_state):
    state = _state()
    state = state.replace(
        step=jnp.asarray(5, jnp.int32),
        opt_task=jax.tree.map(lambda x: x + 0.125, state.opt_task),
    )
    ckpt = Checkpointer(str(tmp_path / "ckpt"))
    ckpt.save(5, jax.device_get(state), data_state)
    assert ckpt.latest_step() == 5
    restored, restored_data = Checkpointer(str(tmp_path / "ckpt")).restore(_state(seed=1))
    assert trees_equal(restored, jax.device_get(state))
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    assert restored_data == data_state
    ckpt.close()


def test_keeps_the_newest_and_restores_latest(tmp_path):
    ckpt = Checkpointer(str(tmp_path), max_to_keep=2)
    for step in (1, 2, 3):
        ckpt.save(step, _state(seed=step).replace(step=jnp.asarray(step)), {"i": step})
    restored, data = ckpt.restore(_state())
    assert int(restored.step) == 3 and data == {"i": 3}
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.isdigit()) == ["2", "3"]
    ckpt.close()


def test_no_checkpoint_and_mismatched_model(tmp_path):
    assert Checkpointer(str(tmp_path / "empty")).restore(_state()) is None
    ckpt = Checkpointer(str(tmp_path / "c"))
    ckpt.save(1, _state(width=3))
    with pytest.raises(ValueError, match="different config"):
        ckpt.restore(_state(width=4))
    ckpt.close()
