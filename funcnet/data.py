"""MNIST loading: strict IDX parsing, checksums of the decompressed bytes, mirror download.

Files are looked up, in order, in the ``data_dir`` argument, in ``$FUNCNET_DATA`` and in the
user cache (``$XDG_CACHE_HOME/funcnet/mnist``, default ``~/.cache/funcnet/mnist``). Missing
files are downloaded into ``data_dir`` if given, else into the cache; a ``$FUNCNET_DATA``
that is set is meant: one that lacks a file (or is no folder) is an error, not passed over.
Every problem raises :class:`MNISTError` (a ``ValueError``) naming the file and what is wrong.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import secrets
import sys
import time
import urllib.request
import zlib
from collections.abc import Iterable, Mapping
from http.client import HTTPException
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ._progress import ProgressBar

__all__ = [
    "ENV_VAR",
    "MD5",
    "MIRRORS",
    "SIZES",
    "TEST_SIZE",
    "TRAIN_SIZE",
    "MNISTError",
    "cache_dir",
    "find_or_download",
    "load_mnist",
    "load_mnist_test",
    "read_idx",
    "search_dirs",
]

ENV_VAR = "FUNCNET_DATA"
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
# md5 of the *decompressed* files, so that a re-compressed copy is still accepted.
MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
# The decompressed size of each file: its IDX header and 60000 (train) or 10000 (t10k)
# 28x28 images or labels.  Every read and download is capped by it.
TRAIN_SIZE, TEST_SIZE = 60000, 10000
SIZES = {
    "train-images-idx3-ubyte": 16 + TRAIN_SIZE * 784,
    "train-labels-idx1-ubyte": 8 + TRAIN_SIZE,
    "t10k-images-idx3-ubyte": 16 + TEST_SIZE * 784,
    "t10k-labels-idx1-ubyte": 8 + TEST_SIZE,
}
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
_MAGIC = {name: IMAGES_MAGIC if "images" in name else LABELS_MAGIC for name in MD5}
# IDX type code -> big-endian dtype (the format is big-endian by definition).
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 16


class MNISTError(ValueError):
    """A data file is missing, malformed or fails its checksum."""


def cache_dir() -> Path:
    """The per-user download directory: ``$XDG_CACHE_HOME/funcnet/mnist`` or ``~/.cache/...``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "funcnet" / "mnist"


def search_dirs(data_dir: str | os.PathLike | None = None) -> list[tuple[Path, str]]:
    """Directories searched for the files, in order, each with where it came from."""
    dirs = []
    if data_dir is not None:
        dirs.append((Path(data_dir).expanduser(), "data_dir argument"))
    if os.environ.get(ENV_VAR):
        dirs.append((Path(os.environ[ENV_VAR]).expanduser(), f"${ENV_VAR}"))
    dirs.append((cache_dir(), "user cache"))
    unique: dict[Path, str] = {}
    for d, why in dirs:
        unique.setdefault(d, why)
    return list(unique.items())


def _gz_cap(size: int) -> int:
    """The most bytes a gzip file of ``size`` decompressed bytes can take: deflate's stored
    blocks add 5 bytes per 64 KiB, the gzip header and trailer a few dozen more."""
    return size + size // 1000 + 4096


def _decompressed(path: Path, label: str | None = None, size: int | None = None) -> bytes:
    """The file's bytes, gunzipped if they start with the gzip magic (whatever the name).
    ``size``: what they should decompress to; a file that cannot is refused before it is
    read, and decompression stops one byte past it."""
    label = label or str(path)
    try:
        if size is not None and path.stat().st_size > _gz_cap(size):
            raise MNISTError(
                f"{label}: {path.stat().st_size} bytes, more than the file it should be "
                f"({size} bytes, at most {_gz_cap(size)} gzipped)"
            )
        raw = path.read_bytes()
    except OSError as e:  # unreadable (permissions), a folder, a vanished file
        raise MNISTError(f"{label}: cannot be read ({e.strerror or e})") from None
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return _gunzip(raw, label, size)
    except (OSError, EOFError, zlib.error) as e:
        raise MNISTError(f"{label}: corrupt gzip stream ({type(e).__name__}: {e})") from e


def _gunzip(raw: bytes, label: str, size: int | None) -> bytes:
    """``gzip.decompress`` (members one after another), with the output capped at ``size``
    bytes: a gzip bomb is refused after ``size + 1`` bytes, not after all of them."""
    out: list[bytes] = []
    done, data = 0, raw
    while data:
        if data[:2] != _GZIP_MAGIC:
            raise OSError("trailing bytes after the last gzip member")
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        chunk = d.decompress(data, 0 if size is None else size - done + 1)
        done += len(chunk)
        if size is not None and done > size:
            raise MNISTError(f"{label}: decompresses to more than the {size} bytes it should")
        if not d.eof:
            raise EOFError("compressed file ended before the end-of-stream marker was reached")
        out.append(chunk)
        data = d.unused_data
    return b"".join(out)


def _parse_idx(data: bytes, label: str, expected_magic: int | None) -> np.ndarray:
    if len(data) < 4:
        raise MNISTError(f"{label}: too short for an IDX header ({len(data)} bytes)")
    magic = int.from_bytes(data[:4], "big")
    zero, code, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if expected_magic is not None and magic != expected_magic:
        raise MNISTError(f"{label}: magic number {magic}, expected {expected_magic}")
    if zero != 0 or code not in _IDX_DTYPES or ndim == 0:
        raise MNISTError(f"{label}: not an IDX file (magic number {magic} = 0x{magic:08x})")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise MNISTError(f"{label}: truncated header, {len(data)} of {header} bytes")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = header + math.prod(dims) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "trailing bytes after the data"
        raise MNISTError(
            f"{label}: {what}: header {dims} implies {expected} bytes, file has {len(data)}"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    # Copy to native byte order: a writable array that does not pin the decompressed bytes.
    return arr.astype(dtype.newbyteorder("="))


def _check_md5(data: bytes, label: str, expected: str | None) -> None:
    if expected is None:
        return
    actual = hashlib.md5(data).hexdigest()
    if actual != expected.lower():
        raise MNISTError(f"{label}: md5 of the decompressed bytes is {actual}, expected {expected}")


def read_idx(
    path: str | os.PathLike,
    expected_magic: int | None = None,
    *,
    md5: str | None = None,
    max_bytes: int | None = None,
) -> np.ndarray:
    """Read one IDX file, gzipped or raw, into an array of the header's shape and type.

    The payload must match the header dims exactly; ``md5`` (if given) is checked against
    the decompressed bytes.  ``max_bytes`` caps the decompressed size: a larger file (a gzip
    bomb) is refused without reading more than that.
    """
    path = Path(path)
    data = _decompressed(path, size=max_bytes)
    arr = _parse_idx(data, str(path), expected_magic)
    _check_md5(data, str(path), md5)
    return arr


def _base(name: str) -> str:
    base = name.removesuffix(".gz")
    if base not in MD5:
        raise ValueError(f"unknown MNIST file {name!r}; expected one of {sorted(MD5)}")
    return base


def _md5_table(checksums: Mapping[str, str] | bool) -> dict[str, str | None]:
    if checksums is True:
        return dict(MD5)
    if checksums is False:
        return dict.fromkeys(MD5)
    if not isinstance(checksums, Mapping):
        raise TypeError(f"checksums must be True, False or a mapping, not {checksums!r}")
    return {**MD5, **{_base(k): v for k, v in checksums.items()}}


def _fetch(
    url: str,
    dest: Path,
    base: str,
    md5: str | None,
    timeout: float,
    progress: bool,
    deadline: float | None = None,
):
    """Download ``url`` to ``dest`` atomically, verifying it first; no file is left on failure.

    ``timeout`` bounds each wait for the server; ``deadline`` (seconds) the whole transfer,
    so that a server trickling a byte at a time cannot hold the download forever.  The bytes
    read are capped by the file's known size (:data:`SIZES`), and so is decompression."""
    start = time.monotonic()
    cap = _gz_cap(SIZES[base])  # what the server may send: the file gzipped, or not
    # Same directory as dest so os.replace is atomic; open() rather than mkstemp so the file
    # gets the usual umask permissions instead of 0600.
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
    done = 0
    bar = ProgressBar(sys.stderr, enabled=progress)
    bar.show(dest.name, 0, None, f"connecting to {url.split('/')[2]} ...")
    try:
        with open(tmp, "xb") as f, urllib.request.urlopen(url, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if total is not None and total > cap:
                raise MNISTError(f"{url}: the server announces {total} bytes; {dest.name} is "
                                 f"at most {cap}")  # fmt: skip
            # read1: whatever has arrived, so the deadline is checked however slow the server
            while chunk := resp.read1(_CHUNK):
                if deadline is not None and time.monotonic() - start > deadline:
                    raise TimeoutError(
                        f"deadline of {deadline:g} s passed with {done} of "
                        f"{total if total is not None else '?'} bytes"
                    )
                if done + len(chunk) > cap:
                    raise MNISTError(f"{url}: more than {cap} bytes sent; {dest.name} is at "
                                     "most that")  # fmt: skip
                f.write(chunk)
                done += len(chunk)
                if bar.enabled:
                    size = f"{done / 1e6:.1f}" + (f"/{total / 1e6:.1f}" if total else "") + " MB"
                    share = f"{done / total:4.0%} " if total else ""
                    bar.show(dest.name, done, total, share + size)
        # http.client returns a short body without complaint when the server hangs up early.
        if total is not None and done != total:
            raise MNISTError(f"{url}: transfer cut short, {done} of {total} bytes")
        data = _decompressed(tmp, label=url, size=SIZES[base])
        _parse_idx(data, url, _MAGIC[base])
        _check_md5(data, url, md5)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        bar.finish()


def _remove_stale_parts(dest: Path, deadline: float | None) -> None:
    """Temp files a killed download left beside ``dest``.  One older than the deadline
    cannot belong to a download still running (it would have been given up)."""
    if not dest.parent.is_dir():
        return
    now = time.time()
    for part in dest.parent.glob(f".{dest.name}.*.part"):
        with contextlib.suppress(OSError):
            if deadline is None or now - part.stat().st_mtime > deadline:
                part.unlink()


def find_or_download(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    mirrors: Iterable[str] | None = None,
    checksums: Mapping[str, str] | bool = True,
    timeout: float = 30.0,
    progress: bool | None = None,
    deadline: float | None = 600.0,
) -> Path:
    """Path of one MNIST file (``name`` with or without ``.gz``), downloading it if missing.

    A local file is returned as found (it is validated when read); a download is checked
    (size, IDX header, md5) before it is moved into place, and the next mirror is tried on any
    failure. ``progress=None`` shows a progress bar only when stderr is a terminal.
    ``timeout`` bounds each wait for a server, ``deadline`` each mirror's whole transfer.
    """
    base = _base(name)
    if data_dir is not None and Path(data_dir).expanduser().is_file():
        raise MNISTError(f"data_dir {data_dir} is a file; give the folder that holds the files")
    dirs = search_dirs(data_dir)
    for d, why in dirs:
        for candidate in (d / f"{base}.gz", d / base):
            if candidate.is_file():
                return candidate
        if why == f"${ENV_VAR}":  # set on purpose: wrong, it is not passed over in silence
            raise MNISTError(_env_problem(d, base))

    where = "\n".join(f"  {d}  ({why})" for d, why in dirs)
    howto = (
        f"Put the four MNIST files ({', '.join(f'{b}.gz' for b in MD5)}; gzipped or not) "
        f"in one of these directories, or set ${ENV_VAR} to the directory that holds them."
    )
    if not download:
        raise MNISTError(f"{base}[.gz] not found (download=False). Searched:\n{where}\n{howto}")

    dest_dir = Path(data_dir).expanduser() if data_dir is not None else cache_dir()
    dest = dest_dir / f"{base}.gz"
    # Folders made for the download are removed again if it fails: a mistyped data_dir must
    # not be left behind as an empty tree.
    made = [p for p in (dest_dir, *dest_dir.parents) if not p.exists()]
    mirrors = (mirrors,) if isinstance(mirrors, str) else tuple(mirrors or MIRRORS)
    if progress is None:
        progress = sys.stderr.isatty()
    md5 = _md5_table(checksums)[base]
    errors = []
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        errors.append(f"  cannot create {dest_dir}: {e}")
        mirrors = ()
    _remove_stale_parts(dest, deadline)
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + dest.name
        try:
            _fetch(url, dest, base, md5, timeout, progress, deadline)
            return dest
        except (OSError, HTTPException, ValueError) as e:  # URLError, timeouts: OSError
            errors.append(f"  {url}: {type(e).__name__}: {e}")
    for folder in made:  # deepest first
        with contextlib.suppress(OSError):
            folder.rmdir()
    tried = "\n".join(errors) or "  (no mirrors given)"
    raise MNISTError(
        f"{base}[.gz] not found and could not be downloaded into {dest_dir}.\n"
        f"Mirrors tried:\n{tried}\n"
        f"Searched:\n{where}\n{howto}"
    )


def _env_problem(folder: Path, base: str) -> str:
    """Why ``$FUNCNET_DATA`` (``folder``) does not give the file ``base``."""
    what = (
        f"has no {base}[.gz]" if folder.is_dir()
        else "is a file, not a folder" if folder.exists() else "does not exist"
    )  # fmt: skip
    return (
        f"${ENV_VAR} is set to {folder}, which {what}: set it to the folder that holds the four "
        f"MNIST files, or unset it to use {cache_dir()} (downloading there if missing)"
    )


def load_mnist(
    data_dir: str | os.PathLike | None = None,
    *,
    normalize: bool = True,
    flatten: bool = True,
    one_hot: bool = False,
    download: bool = True,
    mirrors: Iterable[str] | None = None,
    dtype: npt.DTypeLike = np.float32,
    checksums: Mapping[str, str] | bool = True,
    timeout: float = 30.0,
    progress: bool | None = None,
    deadline: float | None = 600.0,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Load MNIST as ``((x_train, t_train), (x_test, t_test))``.

    Images: ``normalize=True`` gives ``dtype`` values pixel/255 in [0, 1]; ``normalize=False``
    keeps the raw uint8 pixels (0..255, ``dtype`` ignored). Shape (N, 784) if ``flatten``,
    else (N, 1, 28, 28). Labels: int64 in 0..9, or ``dtype`` one-hot of shape (N, 10) if
    ``one_hot``. ``checksums`` may map file names to the md5s of their decompressed bytes
    (merged over :data:`MD5`); ``checksums=False`` skips the check. Other arguments: see
    :func:`find_or_download`.
    """
    splits = _load(
        ("train", "t10k"), data_dir, normalize=normalize, flatten=flatten, one_hot=one_hot,
        download=download, mirrors=mirrors, dtype=dtype, checksums=checksums,
        timeout=timeout, progress=progress, deadline=deadline,
    )  # fmt: skip
    return splits[0], splits[1]


def load_mnist_test(data_dir: str | os.PathLike | None = None, **options):
    """The test split alone, ``(x_test, t_test)``, as :func:`load_mnist` gives it (the same
    keyword ``options``): only the two ``t10k`` files are looked up, read or downloaded."""
    return _load(("t10k",), data_dir, **options)[0]


def _load(
    prefixes: tuple[str, ...],
    data_dir,
    *,
    normalize: bool = True,
    flatten: bool = True,
    one_hot: bool = False,
    download: bool = True,
    mirrors=None,
    dtype=np.float32,
    checksums: Mapping[str, str] | bool = True,
    timeout: float = 30.0,
    progress: bool | None = None,
    deadline: float | None = 600.0,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The splits ``prefixes`` (``"train"``, ``"t10k"``) as ``(x, t)``: see load_mnist."""
    table = _md5_table(checksums)
    fetch = dict(
        data_dir=data_dir,
        download=download,
        mirrors=mirrors,
        checksums=checksums,
        timeout=timeout,
        progress=progress,
        deadline=deadline,
    )

    # Locate (or download) every file before parsing any, so a missing one fails fast.
    paths = {base: find_or_download(base, **fetch) for base in MD5 if base.startswith(prefixes)}
    splits = []
    for prefix in prefixes:
        img, lbl = f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"
        img_path, lbl_path = paths[img], paths[lbl]
        x = read_idx(img_path, IMAGES_MAGIC, md5=table[img], max_bytes=SIZES[img])
        t = read_idx(lbl_path, LABELS_MAGIC, md5=table[lbl], max_bytes=SIZES[lbl])
        if x.shape[1:] != (28, 28):
            raise MNISTError(f"{img_path}: images are {x.shape[1:]}, expected (28, 28)")
        if len(x) != len(t):
            raise MNISTError(f"{img_path} has {len(x)} images but {lbl_path} has {len(t)} labels")
        if t.size and t.max() > 9:
            bad = int(np.count_nonzero(t > 9))
            raise MNISTError(f"{lbl_path}: {bad} labels out of range 0..9 (max {t.max()})")
        x = x.reshape(len(x), 784) if flatten else x.reshape(len(x), 1, 28, 28)
        if normalize:
            x = x.astype(dtype)
            x /= 255
        t = t.astype(np.int64)
        if one_hot:
            t = np.eye(10, dtype=dtype)[t]
        splits.append((x, t))
    return splits
