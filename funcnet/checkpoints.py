"""Checkpoints to and from ``.npz``, written atomically: params (running state included) for
a trained model, and runs (params, optimizer state, epochs done, settings) to resume."""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import sys
import tempfile
import zipfile
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from . import _signals


def _flat(params, prefix: str = "") -> dict[str, np.ndarray]:
    import jax

    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return {
        prefix + (jax.tree_util.keystr(path) or ("" if prefix else "root")): np.asarray(leaf)
        for path, leaf in leaves
    }


def save_params(path, params) -> None:
    """Write ``params`` to ``path`` (``.npz``), atomically: a temp file beside it, then a
    rename; the temp file is removed on any failure, Ctrl-C included.  The file gets the
    usual permissions (the umask's), like any file a program saves."""
    _write(path, _flat(params))


def _write(path, arrays: dict[str, np.ndarray]) -> None:
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    _remove_stale_parts(folder, name)
    # The pid in the name tells a later write whether the writer is still alive.
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.{secrets.token_hex(4)}.part")
    try:
        with _signals.deferred(), open(tmp, "xb") as f:  # a signal waits for the rename
            np.savez(f, **arrays)
            f.close()
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def _remove_stale_parts(folder: str, name: str) -> None:
    """Temp files that an earlier write of ``name`` left when it was killed (SIGKILL, a
    power cut): those whose writer (the pid in their name) is no longer running."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            parts = entry.name[len(name) + 2 :].split(".")
            if not (entry.name.startswith(f".{name}.") and len(parts) == 3
                    and parts[2] == "part" and parts[0].isdigit()):  # fmt: skip
                continue
            if not _alive(int(parts[0])):
                with contextlib.suppress(OSError):
                    os.remove(entry.path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process; a bogus number
        return pid < 2**22
    return True


def load_params(path, like):
    """Read params saved by :func:`save_params` into the structure of ``like`` (e.g. fresh
    params from ``net.init``); every leaf must match in name, shape and dtype, and a file
    with entries the network lacks (or lacking some it has) is refused, naming them."""
    path = os.fspath(path)
    want = _flat(like)
    return _unflatten(like, _read(path, "load_params", "save_params", want), want)


_MAX_ENTRIES = 100_000  # zip entries: far more than any network's leaves


class _Npz:
    """An ``.npz`` file read as untrusted input: the zip's directory and each array's
    ``.npy`` header are checked before any array's data is read, and each read is bounded
    by the size its header declares, so that a file cannot make the reader allocate more
    than the arrays it is checked to hold (a deflate bomb, a header claiming 10¹⁰ floats)."""

    def __init__(self, path: str, who: str, writer: str):
        self.path, self.who, self.writer = path, who, writer
        with open(path, "rb") as f:  # FileNotFoundError: the caller's to report
            head = f.read(6)
        if not head:
            self.fail("No data left in file: it is empty")
        if head.startswith(b"\x93NUMPY"):
            self.fail("it holds a single array, not named params")
        if not head.startswith(b"PK"):
            self.fail("not an .npz file")
        with self.reading():
            self.zip = zipfile.ZipFile(path)
        try:
            self._entries(self.zip.infolist())
        except BaseException:
            self.zip.close()
            raise

    def _entries(self, infos: list[zipfile.ZipInfo]) -> None:
        if len(infos) > _MAX_ENTRIES:
            self.fail(f"{len(infos)} entries, more than any network has ({_MAX_ENTRIES})")
        self.entries, self._layout = {}, {}
        for info in infos:
            if not info.filename.endswith(".npy") or info.filename[:-4] in self.entries:
                self.fail(f"entry {info.filename!r} is not one .npy array")
            if info.flag_bits & 0x1:
                self.fail(f"entry {info.filename!r} is encrypted")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                # bzip2/lzma members are decompressed by zipfile without a bound on the output
                self.fail(f"entry {info.filename!r} uses zip compression method "
                          f"{info.compress_type}; only stored and deflated are read")  # fmt: skip
            self.entries[info.filename[:-4]] = info

    def fail(self, reason: str):
        raise ValueError(f"{self.who}: {self.path} is not a checkpoint {self.writer} wrote "
                         f"({reason})")  # fmt: skip

    @contextlib.contextmanager
    def reading(self, key: str | None = None):
        """Every way a corrupt zip or ``.npy`` fails, as one ValueError naming the file."""
        try:
            yield
        except ValueError as e:
            if str(e).startswith(f"{self.who}: "):
                raise
            self.fail(self._reason(e, key))
        except Exception as e:  # zip, zlib, struct, tokenize, numpy: any of them may fail
            if isinstance(e, FileNotFoundError) and key is None:
                raise
            self.fail(self._reason(e, key))

    @staticmethod
    def _reason(e: BaseException, key: str | None) -> str:
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        # numpy's own messages for a pickled array suggest allow_pickle=True: never that.
        if "pickle" in text:
            text = "it holds Python objects (pickled data), which are never loaded"
        return f"{key}: {text}" if key else text

    def header(self, key: str) -> tuple[tuple[int, ...], np.dtype]:
        """``key``'s shape and dtype from its ``.npy`` header, nothing else read."""
        info = self.entries[key]
        with self.reading(key), self.zip.open(info) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f".npy format version {version} is not read")
            offset = f.tell()
        if dtype.hasobject:
            self.fail(f"{key}: it holds Python objects (pickled data), which are never loaded")
        self._layout[key] = (offset, fortran)
        return tuple(shape), dtype

    def array(self, key: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """``key``'s data, after :meth:`header` gave ``shape`` and ``dtype``: never more
        than those bytes are decompressed, and a member holding more is refused."""
        offset, fortran = self._layout[key]
        nbytes, size = math.prod(shape) * dtype.itemsize, self.entries[key].file_size
        if size != offset + nbytes:  # the zip's word, before reading: the read checks it
            self.fail(f"{key}: the zip says {size} bytes, its header {dtype}{list(shape)} "
                      f"implies {offset + nbytes}")  # fmt: skip
        with self.reading(key), self.zip.open(self.entries[key]) as f:
            f.read(offset)
            data = f.read(nbytes)
            if len(data) != nbytes:
                raise ValueError(f"truncated: {len(data)} of {nbytes} bytes")
            if f.read(1):  # reaching the end also checks the member's CRC
                raise ValueError("more data than its header declares")
        flat = np.frombuffer(data, dtype=dtype, count=math.prod(shape))
        return flat.reshape(shape, order="F" if fortran else "C").copy()

    def close(self) -> None:
        self.zip.close()


def _read(path: str, who: str, writer: str, want: dict, small: dict | None = None, skip=()) -> dict:
    """The file's arrays, checked before they are read: the names against ``want``'s
    (arrays like the network's), each header's shape and dtype against ``want``'s, and the
    ``small`` entries (``{name: (kinds, max bytes)}``: a run's epoch and settings) against
    their bounds; ``skip``: entries left unread."""
    npz = _Npz(path, who, writer)
    try:
        small = small or {}
        got = {k: v for k, v in npz.entries.items() if k not in small and k not in skip}
        _match_names(path, who, got, want)
        if any(k not in npz.entries for k in small):
            what = f"is not a run checkpoint {writer} wrote (no epoch/meta)"
            raise ValueError(f"{who}: {path} {what}")
        out = {}
        for k, ref in want.items():
            shape, dtype = npz.header(k)
            if shape != ref.shape or dtype != ref.dtype:
                raise ValueError(
                    f"{who}: {path}: {k} is {dtype}{list(shape)}, the network "
                    f"expects {ref.dtype}{list(ref.shape)}"
                )
        for k, (kinds, limit) in small.items():
            shape, dtype = npz.header(k)
            if shape != () or dtype.kind not in kinds or dtype.itemsize > limit:
                npz.fail(f"{k} is {dtype}{list(shape)}, not a scalar of kind {kinds!r}")
            out[k] = npz.array(k, shape, dtype)[()]
        for k, ref in want.items():
            out[k] = npz.array(k, ref.shape, ref.dtype)
        return out
    finally:
        npz.close()


def _match_names(path: str, who: str, got, want: dict) -> None:
    """The file's entry names ``got`` against the network's ``want``."""
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    if missing or extra:
        raise ValueError(
            f"{who}: {path} does not match the network: missing {missing or 'none'}, "
            f"unexpected {extra or 'none'}"
        )


def _unflatten(like, got: dict, want: dict):
    import jax

    return jax.tree_util.tree_structure(like).unflatten([got[k] for k in want])


# --------------------------------------------------------------------------- runs

_PARAMS, _OPT, _EPOCH, _META = "params", "opt_state", "epoch", "meta"


class Run(NamedTuple):
    """A run checkpoint: what ``train.fit(run.params, ..., resume=run)`` resumes from (its
    ``epoch`` and ``opt_state``), and the settings the run was started with."""

    params: Any
    opt_state: Any
    epoch: int
    meta: dict


def save_run(path, params, opt_state, epoch: int, meta: dict | None = None) -> None:
    """Write a run checkpoint, atomically like :func:`save_params`: the last iterate
    ``params`` (running state included), the optimizer state, the ``epoch`` count finished
    and ``meta``, a JSON-able dict of the settings a resume must share (seed, batch, ...)."""
    if not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"save_run: epoch must be an int >= 0, got {epoch!r}")
    arrays = {**_flat(params, _PARAMS), **_flat(opt_state, _OPT)}
    arrays[_EPOCH] = np.asarray(epoch, np.int64)
    arrays[_META] = np.asarray(json.dumps(meta or {}, sort_keys=True))
    _write(path, arrays)


def run_info(path) -> tuple[int, dict]:
    """``(epoch, meta)`` of a run checkpoint, without its arrays' structures: enough to
    check a resume's settings before any work.  Only those two entries are read."""
    path = os.fspath(path)
    npz = _Npz(path, "run_info", "save_run")
    try:
        names = set(npz.entries) - {_EPOCH, _META}
    finally:
        npz.close()
    got = _read(path, "run_info", "save_run", {}, _SMALL, skip=names)
    return _info(path, "run_info", got)


# A run's epoch count and its settings (JSON): bounded, so that checking a resume reads
# bytes, not what a forged header claims.
_SMALL = {_EPOCH: ("iu", 8), _META: ("U", 4 << 20)}


def _info(path: str, who: str, got: dict) -> tuple[int, dict]:
    epoch = int(got[_EPOCH])
    if epoch < 0:
        raise ValueError(f"{who}: {path}: epoch is {epoch}, a run checkpoint has >= 0")
    try:
        meta = json.loads(str(got[_META]))
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise ValueError(f"{who}: {path}: meta is not the JSON settings save_run writes")
    return epoch, meta


def load_run(path, params_like, opt_state_like) -> Run:
    """Read a run checkpoint into the structures of ``params_like`` (``net.init``'s params)
    and ``opt_state_like`` (``optimizer.init(trainable(params))``), checked leaf by leaf
    like :func:`load_params`.  The arrays come back as NumPy arrays."""
    path = os.fspath(path)
    want_p, want_s = _flat(params_like, _PARAMS), _flat(opt_state_like, _OPT)
    got = _read(path, "load_run", "save_run", {**want_p, **want_s}, _SMALL)
    epoch, meta = _info(path, "load_run", got)
    params = _unflatten(params_like, got, want_p)
    return Run(params, _unflatten(opt_state_like, got, want_s), epoch, meta)


# ------------------------------------------------------------------ failed writes


def fallback_paths(path) -> list[str]:
    """Where a file that cannot be written to ``path`` goes instead, in order: the temp
    folder, then the home folder; the name keeps ``path``'s and adds the pid, so that two
    runs never share one."""
    name = f"funcnet-{os.getpid()}-{os.path.basename(os.fspath(path))}"
    return [os.path.join(tempfile.gettempdir(), name), os.path.join(os.path.expanduser("~"), name)]


def save_or_fallback(save: Callable[[str], None], path, what: str, who: str) -> str | None:
    """Call ``save(path)``; when it fails (a full disk, a folder turned read-only) call it
    on each of :func:`fallback_paths` until one works, and say where ``what`` went in one
    line on stderr.  Returns where the file is, or None (and a line saying so) when it
    could be written nowhere.  Never raises for a failed write: a finished run must not be
    lost to its last step."""
    path = os.fspath(path)
    try:
        save(path)
        return path
    except OSError as e:
        first = f"cannot write {path} ({e.strerror or e})"
    errors = []
    for other in fallback_paths(path):
        try:
            save(other)
        except OSError as e:
            errors.append(f"{other}: {e.strerror or e}")
            continue
        print(f"{who}: {first}; {what} are in {other} instead", file=sys.stderr, flush=True)
        return other
    print(f"{who}: {first}, nor anywhere else ({'; '.join(errors)}): {what} are lost",
          file=sys.stderr, flush=True)  # fmt: skip
    return None


def save_params_or_fallback(path, params, who: str = "funcnet") -> str | None:
    """:func:`save_params` through :func:`save_or_fallback`: where the params went."""
    return save_or_fallback(lambda p: save_params(p, params), path, "the params", who)


def save_run_or_fallback(
    path, params, opt_state, epoch: int, meta: dict | None = None, who: str = "funcnet"
) -> str | None:
    """:func:`save_run` through :func:`save_or_fallback`: where the run checkpoint went.  A
    run goes on after a failed checkpoint; the next epoch tries ``path`` again."""
    return save_or_fallback(
        lambda p: save_run(p, params, opt_state, epoch, meta), path,
        f"the run checkpoint of epoch {epoch}", who,
    )  # fmt: skip


def conflicting_outputs(save=None, checkpoint=None, resume=None) -> str | None:
    """Why the files of ``--save``, ``--checkpoint`` and ``--resume`` cannot go together (None
    when they can): the params written over the run checkpoint a resume needs.  (The run
    checkpoint resumed and the one written may be one file: that is how a run goes on.)"""

    def same(a, b) -> bool:
        if a is None or b is None:
            return False
        with contextlib.suppress(OSError):
            return os.path.samefile(a, b)
        return os.path.realpath(a) == os.path.realpath(b)

    if same(save, checkpoint):
        return (f"--save and --checkpoint are the same file {save}: the params would "
                "overwrite the run checkpoint that --resume needs; give two files")  # fmt: skip
    if same(save, resume):
        return (f"--save {save} is the run checkpoint being resumed: the params would "
                "overwrite it; give another file")  # fmt: skip
    return None


__all__ = [
    "Run",
    "conflicting_outputs",
    "fallback_paths",
    "load_params",
    "load_run",
    "run_info",
    "save_or_fallback",
    "save_params",
    "save_params_or_fallback",
    "save_run",
    "save_run_or_fallback",
]
