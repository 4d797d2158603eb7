"""Checkpoints to and from ``.npz``, written atomically: params (running state included) for
a trained model, and runs (params, optimizer state, epochs done, settings) to resume."""

from __future__ import annotations

import json
import os
import secrets
import zipfile
from typing import Any, NamedTuple

import numpy as np


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
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(4)}.part")
    try:
        with open(tmp, "xb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_params(path, like):
    """Read params saved by :func:`save_params` into the structure of ``like`` (e.g. fresh
    params from ``net.init``); every leaf must match in name, shape and dtype, and a file
    with entries the network lacks (or lacking some it has) is refused, naming them."""
    path = os.fspath(path)
    got = _read(path, "load_params", "save_params")
    return _unflatten(like, got, _match(path, "load_params", got, _flat(like)))


def _read(path: str, who: str, writer: str) -> dict[str, np.ndarray]:
    try:
        f = np.load(path, allow_pickle=False)
        if not isinstance(f, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single array, not named params")
        with f:
            return {k: f[k] for k in f.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        if isinstance(e, FileNotFoundError):
            raise
        # numpy's own message for a non-npz file suggests allow_pickle=True: never that.
        reason = "not an .npz file" if "pickle" in str(e) else str(e) or type(e).__name__
        raise ValueError(f"{who}: {path} is not a checkpoint {writer} wrote ({reason})") from None


def _match(path: str, who: str, got: dict, want: dict) -> dict:
    """``want``'s keys, checked against the file's entries ``got``: names, shapes, dtypes."""
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    if missing or extra:
        raise ValueError(
            f"{who}: {path} does not match the network: missing {missing or 'none'}, "
            f"unexpected {extra or 'none'}"
        )
    for k, ref in want.items():
        if got[k].shape != ref.shape or got[k].dtype != ref.dtype:
            raise ValueError(
                f"{who}: {path}: {k} is {got[k].dtype}{list(got[k].shape)}, the network "
                f"expects {ref.dtype}{list(ref.shape)}"
            )
    return want


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
    check a resume's settings before any work."""
    path = os.fspath(path)
    got = _read(path, "run_info", "save_run")
    return _info(path, "run_info", got)


def _info(path: str, who: str, got: dict) -> tuple[int, dict]:
    if _EPOCH not in got or _META not in got:
        raise ValueError(f"{who}: {path} is not a run checkpoint save_run wrote (no epoch/meta)")
    return int(got[_EPOCH]), json.loads(str(got[_META]))


def load_run(path, params_like, opt_state_like) -> Run:
    """Read a run checkpoint into the structures of ``params_like`` (``net.init``'s params)
    and ``opt_state_like`` (``optimizer.init(trainable(params))``), checked leaf by leaf
    like :func:`load_params`.  The arrays come back as NumPy arrays."""
    path = os.fspath(path)
    got = _read(path, "load_run", "save_run")
    epoch, meta = _info(path, "load_run", got)
    arrays = {k: v for k, v in got.items() if k not in (_EPOCH, _META)}
    want_p, want_s = _flat(params_like, _PARAMS), _flat(opt_state_like, _OPT)
    _match(path, "load_run", arrays, {**want_p, **want_s})
    params = _unflatten(params_like, arrays, want_p)
    return Run(params, _unflatten(opt_state_like, arrays, want_s), epoch, meta)


__all__ = ["Run", "load_params", "load_run", "run_info", "save_params", "save_run"]
