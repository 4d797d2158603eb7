"""Checkpoints: params (running state included) to and from ``.npz``, written atomically."""

from __future__ import annotations

import os
import secrets
import zipfile

import numpy as np


def _flat(params) -> dict[str, np.ndarray]:
    import jax

    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return {jax.tree_util.keystr(path) or "root": np.asarray(leaf) for path, leaf in leaves}


def save_params(path, params) -> None:
    """Write ``params`` to ``path`` (``.npz``), atomically: a temp file beside it, then a
    rename; the temp file is removed on any failure, Ctrl-C included.  The file gets the
    usual permissions (the umask's), like any file a program saves."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(4)}.part")
    try:
        with open(tmp, "xb") as f:
            np.savez(f, **_flat(params))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_params(path, like):
    """Read params saved by :func:`save_params` into the structure of ``like`` (e.g. fresh
    params from ``net.init``); every leaf must match in name, shape and dtype, and a file
    with entries the network lacks (or lacking some it has) is refused, naming them."""
    import jax

    path = os.fspath(path)
    want = _flat(like)
    try:
        f = np.load(path, allow_pickle=False)
        if not isinstance(f, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single array, not named params")
        with f:
            got = {k: f[k] for k in f.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        if isinstance(e, FileNotFoundError):
            raise
        # numpy's own message for a non-npz file suggests allow_pickle=True: never that.
        reason = "not an .npz file" if "pickle" in str(e) else str(e) or type(e).__name__
        raise ValueError(
            f"load_params: {path} is not a checkpoint save_params wrote ({reason})"
        ) from None
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    if missing or extra:
        raise ValueError(
            f"load_params: {path} does not match the network: missing {missing or 'none'}, "
            f"unexpected {extra or 'none'}"
        )
    for k, ref in want.items():
        if got[k].shape != ref.shape or got[k].dtype != ref.dtype:
            raise ValueError(
                f"load_params: {path}: {k} is {got[k].dtype}{list(got[k].shape)}, the network "
                f"expects {ref.dtype}{list(ref.shape)}"
            )
    return jax.tree_util.tree_structure(like).unflatten([got[k] for k in want])


__all__ = ["load_params", "save_params"]
