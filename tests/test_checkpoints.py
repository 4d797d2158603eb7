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


# ----------------------------------------------------------------- untrusted files
# A checkpoint may come from anyone: every array's header is checked against the network
# before its data is read, and no read is larger than the header it was checked by.


def _npy_header(shape, dtype="<f4", fortran=False) -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": dtype, "fortran_order": fortran, "shape": tuple(shape)}
    )
    return buf.getvalue()  # magic, length, dict, padding


def _zip(path, members: dict, method=None):
    """``members``: name -> bytes, or (header bytes, zero bytes to stream after it)."""
    import zipfile

    method = zipfile.ZIP_DEFLATED if method is None else method
    with zipfile.ZipFile(path, "w", compression=method) as z:
        for name, body in members.items():
            if isinstance(body, bytes):
                z.writestr(name, body)
                continue
            head, zeros = body
            with z.open(name, "w") as f:
                f.write(head)
                chunk = bytes(1 << 20)
                for _ in range(zeros >> 20):
                    f.write(chunk)


def _lie_about_size(path, size: int) -> None:
    """Set every uncompressed size the zip records (local header, directory) to ``size``."""
    import struct

    data = bytearray(path.read_bytes())
    for sig, at in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        i = data.find(sig)
        while i >= 0:
            data[i + at : i + at + 4] = struct.pack("<I", size)
            i = data.find(sig, i + 4)
    path.write_bytes(bytes(data))


def _peak_mib(fn, *args):
    import tracemalloc

    tracemalloc.start()
    try:
        fn(*args)
    except ValueError as e:
        error = e
    else:
        error = None
    finally:
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return error, peak


def _one_entry_net():
    net = fn.pipeline(fn.Dense(16))
    return net, net.init(0, (-1, 8))[1]  # {"[0]['W']": f32[8, 16], "[0]['b']": f32[16]}


def _members(params, **override):
    flat = checkpoints._flat(params)
    body = {f"{k}.npy": _npy_header(v.shape) + v.tobytes() for k, v in flat.items()}
    return {**body, **override}


def test_a_deflate_bomb_is_refused_without_its_memory(tmp_path):
    _, params = _one_entry_net()
    w = "[0]['W'].npy"
    # The header claims the network's shape; 64 MiB of zeros follow in a 64 KB file.
    honest = tmp_path / "honest.npz"
    _zip(honest, _members(params, **{w: (_npy_header((8, 16)), 64 << 20)}))
    assert honest.stat().st_size < 1 << 18
    error, peak = _peak_mib(checkpoints.load_params, honest, params)
    assert error is not None and "the zip says" in str(error) and "implies 640" in str(error)
    assert peak < 16, f"{peak:.0f} MiB read for a refused file"
    # The same, the zip's sizes forged to match the header: the read stops at the header's
    # bytes, and the member's checksum (or the data past them) gives it away.
    forged = tmp_path / "forged.npz"
    forged.write_bytes(honest.read_bytes())
    _lie_about_size(forged, 128 + 8 * 16 * 4)
    error, peak = _peak_mib(checkpoints.load_params, forged, params)
    assert error is not None and f"{forged} is not a checkpoint" in str(error)
    assert peak < 16, f"{peak:.0f} MiB read for a refused file"


def test_a_header_claiming_a_huge_array_is_refused_before_any_read(tmp_path):
    _, params = _one_entry_net()
    path = tmp_path / "huge.npz"
    _zip(path, _members(params, **{"[0]['W'].npy": _npy_header((100000, 100000))}))
    assert path.stat().st_size < 5000
    error, peak = _peak_mib(checkpoints.load_params, path, params)
    assert "[0]['W'] is float32[100000, 100000], the network expects float32[8, 16]" in str(error)
    assert peak < 4


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("bzip2", "compression method 12; only stored and deflated"),
        ("lzma", "compression method 14; only stored and deflated"),
        ("encrypted", "is encrypted"),
        ("pickled", r"Python objects \(pickled data\), which are never loaded"),
        ("crc", "Bad CRC-32"),
        ("not npy", "entry 'notes.txt' is not one .npy array"),
        ("bad header", r"\[0\]\['b'\]: "),
        ("version 3", r"format version \(3, 0\) is not read"),
        ("fortran", None),
    ],
)
def test_every_corruption_is_one_value_error(tmp_path, case, reason):
    import zipfile

    _, params = _one_entry_net()
    path = tmp_path / "bad.npz"
    members, method = _members(params), None
    b = "[0]['b'].npy"
    if case in ("bzip2", "lzma"):
        method = zipfile.ZIP_BZIP2 if case == "bzip2" else zipfile.ZIP_LZMA
    elif case == "pickled":
        members[b] = _npy_header((16,), "|O") + b"\x80\x04N."
    elif case == "not npy":
        members["notes.txt"] = b"hello"
    elif case == "bad header":
        members[b] = np.lib.format.magic(1, 0) + b"\x10\x00{'descr': nonsense}\n"
    elif case == "version 3":
        members[b] = np.lib.format.magic(3, 0) + members[b][8:]
    elif case == "fortran":  # a legal layout: read as such
        w = np.arange(128, dtype=np.float32).reshape(8, 16)
        members["[0]['W'].npy"] = _npy_header((8, 16), fortran=True) + w.tobytes(order="F")
    _zip(path, members, method)
    data = bytearray(path.read_bytes())
    if case == "encrypted":  # the flag bit in the local header and the directory
        for sig, at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
            i = data.find(sig)
            while i >= 0:
                data[i + at] |= 1
                i = data.find(sig, i + 4)
    elif case == "crc":  # one byte of stored data flipped
        _zip(path, members, zipfile.ZIP_STORED)
        data = bytearray(path.read_bytes())
        data[data.find(b"\x93NUMPY") + 200] ^= 0xFF
    path.write_bytes(bytes(data))
    if reason is None:
        loaded = checkpoints.load_params(path, params)
        np.testing.assert_array_equal(loaded[0]["W"], w)
        return
    with pytest.raises(
        ValueError, match=rf"{path} is not a checkpoint save_params wrote .*{reason}"
    ):
        checkpoints.load_params(path, params)


@pytest.mark.parametrize(
    ("epoch", "meta", "message"),
    [
        (np.float64(1.5), '{"seed": 0}', r"epoch is float64\[\], not a scalar of kind 'iu'"),
        (np.arange(3), '{"seed": 0}', r"epoch is int64\[3\], not a scalar"),
        (np.int64(-2), '{"seed": 0}', "epoch is -2, a run checkpoint has >= 0"),
        (np.int64(1), "{not json", "meta is not the JSON settings save_run writes"),
        (np.int64(1), "[1, 2]", "meta is not the JSON settings save_run writes"),
        (np.int64(1), np.ones(2), r"meta is float64\[2\], not a scalar of kind 'U'"),
        (np.int64(1), None, r"is not a run checkpoint save_run wrote \(no epoch/meta\)"),
    ],
)
def test_a_run_checkpoint_with_a_bad_epoch_or_meta_is_one_error(tmp_path, epoch, meta, message):
    _, params = mlp()
    opt = fn.optim.sgd(0.1)
    state = opt.init(fn.core.trainable(params))
    path = tmp_path / "run.npz"
    checkpoints.save_run(path, params, state, 1, {"seed": 0})
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["epoch"] = np.asarray(epoch)
    if meta is None:
        del arrays["meta"]
    else:
        arrays["meta"] = np.asarray(meta)
    np.savez(path, **arrays)
    for read in (
        lambda: checkpoints.run_info(path),
        lambda: checkpoints.load_run(path, params, state),
    ):
        with pytest.raises(ValueError, match=message):
            read()


# ------------------------------------------------------------------ failed writes


@pytest.fixture
def small_fs(tmp_path):
    """A 64 KiB tmpfs at tmp_path/fs where this process may mount one (root), else None."""
    import shutil
    import subprocess

    fs = tmp_path / "fs"
    fs.mkdir()
    mount = shutil.which("mount")
    if os.geteuid() != 0 or mount is None:
        yield None
        return
    ok = subprocess.run([mount, "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(fs)],
                        capture_output=True).returncode == 0  # fmt: skip
    try:
        yield fs if ok else None
    finally:
        if ok:
            subprocess.run(["umount", "-l", str(fs)], capture_output=True)


def _fail_writes_in(monkeypatch, folder, code):
    """Simulated: a write into ``folder`` stops after 100 bytes with OSError ``code``."""
    real = np.savez

    def savez(f, **arrays):
        if os.path.dirname(f.name) == str(folder):
            f.write(b"x" * 100)
            raise OSError(code, os.strerror(code))
        return real(f, **arrays)

    monkeypatch.setattr(np, "savez", savez)


@pytest.mark.parametrize("code", ["ENOSPC", "EROFS"])
def test_a_failed_write_leaves_no_part_and_says_where_the_params_went(
    tmp_path, small_fs, monkeypatch, capsys, code
):
    import errno
    import subprocess

    net = fn.pipeline(fn.Dense(100), fn.Relu(), fn.Dense(10))
    _, params = net.init(0, (-1, 784))  # 318 KB: more than the 64 KiB file system holds
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    folder = small_fs or tmp_path / "fs"
    if small_fs is None:
        _fail_writes_in(monkeypatch, folder, getattr(errno, code))
    elif code == "EROFS":
        subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    target = folder / "m.npz"
    with pytest.raises(OSError, match=os.strerror(getattr(errno, code))):
        checkpoints.save_params(target, params)
    assert list(folder.iterdir()) == []  # no partial file left
    where = checkpoints.save_params_or_fallback(target, params, "funcnet train")
    assert where == str(tmp_path / "tmp" / f"funcnet-{os.getpid()}-m.npz")
    err = capsys.readouterr().err
    assert err == (f"funcnet train: cannot write {target} ({os.strerror(getattr(errno, code))}); "
                   f"the params are in {where} instead\n")  # fmt: skip
    jax.tree_util.tree_map(
        np.testing.assert_array_equal, checkpoints.load_params(where, params), params
    )
    assert list(folder.iterdir()) == []
    # A run checkpoint that fails goes the same way, and says which epoch it holds.
    state = fn.optim.sgd(0.1).init(fn.core.trainable(params))
    where = checkpoints.save_run_or_fallback(folder / "run.npz", params, state, 3, {"seed": 0})
    assert "the run checkpoint of epoch 3 are in" in capsys.readouterr().err
    assert checkpoints.run_info(where) == (3, {"seed": 0})


def test_a_write_that_fails_everywhere_says_the_params_are_lost(tmp_path, capsys):
    def save(path):
        raise OSError(28, "No space left on device")

    where = checkpoints.save_or_fallback(save, tmp_path / "m.npz", "the params", "funcnet train")
    assert where is None
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"cannot write {tmp_path / 'm.npz'} (No space left on device), nor anywhere else" in err
    assert err.rstrip().endswith("the params are lost")


def test_parts_of_a_killed_write_are_removed_those_of_a_live_one_kept(tmp_path):
    import subprocess
    import sys

    _, params = mlp()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    stale = tmp_path / f".net.npz.{int(dead.stdout)}.0badf00d.part"
    live = tmp_path / f".net.npz.{os.getppid()}.0badf00d.part"  # a writer still running
    other = tmp_path / f".other.npz.{int(dead.stdout)}.0badf00d.part"  # another file's
    for p in (stale, live, other):
        p.write_bytes(b"half a file")
    checkpoints.save_params(tmp_path / "net.npz", params)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["net.npz", live.name, other.name])


def test_conflicting_output_paths_are_named(tmp_path):
    f, run = tmp_path / "m.npz", tmp_path / "run.npz"
    assert checkpoints.conflicting_outputs(str(f), str(run), str(run)) is None
    assert checkpoints.conflicting_outputs(None, str(run), None) is None
    msg = checkpoints.conflicting_outputs(str(f), str(tmp_path / "." / "m.npz"), None)
    assert msg.startswith(f"--save and --checkpoint are the same file {f}: the params would")
    run.write_bytes(b"")
    (tmp_path / "link.npz").symlink_to(run)
    msg = checkpoints.conflicting_outputs(str(tmp_path / "link.npz"), None, str(run))
    assert "is the run checkpoint being resumed" in msg
