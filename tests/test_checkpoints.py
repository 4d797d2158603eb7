"""Checkpoints: exact round trips, atomic writes, and files that do not fit refused."""

import os
import stat

import jax
import numpy as np
import pytest
from nets import mlp

import funcnet as fn
from funcnet import checkpoints


def test_checkpoint_round_trip_is_exact_and_atomic(tmp_path):
    net, params = mlp()
    path = tmp_path / "net.npz"
    checkpoints.save_params(path, params)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.npz"]  # no temp file left over
    _, fresh = net.init(99, (-1, 8))
    loaded = checkpoints.load_params(path, fresh)
    assert jax.tree_util.tree_structure(loaded) == jax.tree_util.tree_structure(params)
    jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, params)
    assert all(a.dtype == np.float32 for a in jax.tree_util.tree_leaves(loaded))


def test_checkpoint_mismatch_errors(tmp_path):
    net, params = mlp(hidden=16)
    path = tmp_path / "net.npz"
    checkpoints.save_params(path, params)
    _, wider = fn.pipeline(fn.Dense(32), fn.Relu(), fn.Dense(3)).init(0, (-1, 8))
    with pytest.raises(ValueError, match=r"\[0\]\['W'\] is float32\[8, 16\].*float32\[8, 32\]"):
        checkpoints.load_params(path, wider)
    _, deeper = fn.pipeline(fn.Dense(16), fn.Relu(), fn.Dense(3), fn.Dense(3)).init(0, (-1, 8))
    with pytest.raises(ValueError, match=r"does not match the network: missing \[\"\[3\]"):
        checkpoints.load_params(path, deeper)
    _, f64 = net.init(0, (-1, 8), dtype=np.float64)
    with pytest.raises(ValueError, match=r"float32\[8, 16\].*expects float64"):
        checkpoints.load_params(path, f64)


def test_checkpoints_keep_running_state_and_refuse_extra_entries(tmp_path):
    net = fn.pipeline(fn.Dense(4), fn.BatchNorm(), fn.Dense(3))
    _, params = net.init(0, (-1, 5))
    params = (params[0], {**params[1], "state": {"mean": params[1]["state"]["mean"] + 1,
              "var": params[1]["state"]["var"] * 2}}, params[2])  # fmt: skip
    path = tmp_path / "bn.npz"
    checkpoints.save_params(path, params)
    loaded = checkpoints.load_params(path, net.init(1, (-1, 5))[1])
    jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, params)
    # A deeper net's file in a shallower net: the entries it does not have are named.
    _, shallow = fn.pipeline(fn.Dense(4), fn.BatchNorm()).init(0, (-1, 5))
    with pytest.raises(ValueError, match=r"missing none, unexpected \[\"\[2\]\['W'\]\""):
        checkpoints.load_params(path, shallow)


def test_saved_files_follow_the_umask(tmp_path):
    _, params = mlp()
    old = os.umask(0o022)
    try:
        checkpoints.save_params(tmp_path / "p.npz", params)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "p.npz").st_mode) == 0o644


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "No data left"), (b"hello\n", "not an .npz file"), (b"PK\x03\x04junk", "zip")],
    ids=["empty", "text", "truncated"],
)
def test_a_file_that_is_not_a_checkpoint_is_named_and_never_unpickled(tmp_path, content, reason):
    _, params = mlp()
    bad = tmp_path / "bad.npz"
    bad.write_bytes(content)
    with pytest.raises(ValueError, match=rf"{bad} is not a checkpoint .*{reason}") as e:
        checkpoints.load_params(bad, params)
    assert "allow_pickle" not in str(e.value)
    np.save(tmp_path / "one.npy", np.ones(3))
    with pytest.raises(ValueError, match="a single array, not named params"):
        checkpoints.load_params(tmp_path / "one.npy", params)
