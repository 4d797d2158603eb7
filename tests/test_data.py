"""Tests for funcnet.data: IDX validation on small synthetic files, download from a local
HTTP server, and the real MNIST files when they are available."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import os
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from funcnet.data import MD5, MNISTError, find_or_download, load_mnist, read_idx

NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
REPO_ROOT = Path(__file__).resolve().parents[1]


def idx_bytes(magic: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims) + payload


def synthetic(n_train: int = 5, n_test: int = 3, seed: int = 0) -> dict[str, bytes]:
    """Decompressed bytes of four small, valid MNIST-format files."""
    rng = np.random.default_rng(seed)
    files = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        images[0, 0, 0], images[0, 0, 1] = 0, 255  # pin the range so normalization is checked
        labels = (np.arange(n) % 10).astype(np.uint8)
        files[f"{prefix}-images-idx3-ubyte"] = idx_bytes(2051, (n, 28, 28), images.tobytes())
        files[f"{prefix}-labels-idx1-ubyte"] = idx_bytes(2049, (n,), labels.tobytes())
    return files


def md5s(files: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.md5(data).hexdigest() for name, data in files.items()}


def write(directory: Path, files: dict[str, bytes], gz: bool = True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        if gz:
            (directory / f"{name}.gz").write_bytes(gzip.compress(data, mtime=0))
        else:
            (directory / name).write_bytes(data)
    return directory


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """Keep the user's cache, $FUNCNET_DATA and any proxy out of every test."""
    monkeypatch.delenv("FUNCNET_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")


@pytest.fixture
def files():
    return synthetic()


@pytest.fixture
def data_dir(tmp_path, files):
    return write(tmp_path / "mnist", files)


# --- read_idx ---------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_roundtrip(tmp_path, files, gz):
    write(tmp_path, files, gz=gz)
    name = "train-images-idx3-ubyte" + (".gz" if gz else "")
    x = read_idx(tmp_path / name, 2051)
    expected = np.frombuffer(files["train-images-idx3-ubyte"][16:], np.uint8).reshape(5, 28, 28)
    assert x.dtype == np.uint8 and x.shape == (5, 28, 28) and x.flags.writeable
    np.testing.assert_array_equal(x, expected)


def test_read_idx_detects_gzip_by_content_not_name(tmp_path, files):
    data = files["train-labels-idx1-ubyte"]
    (tmp_path / "gzipped-without-suffix").write_bytes(gzip.compress(data))
    (tmp_path / "raw-with-suffix.gz").write_bytes(data)
    a = read_idx(tmp_path / "gzipped-without-suffix", 2049)
    b = read_idx(tmp_path / "raw-with-suffix.gz", 2049)
    np.testing.assert_array_equal(a, [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(a, b)


def test_read_idx_other_types_big_endian(tmp_path):
    values = np.array([[1, -2], [70000, 3]], dtype=">i4")
    path = tmp_path / "ints"
    path.write_bytes(idx_bytes(0x0C02, (2, 2), values.tobytes()))
    x = read_idx(path)
    assert x.dtype == np.int32 and x.dtype.isnative
    np.testing.assert_array_equal(x, values)


def test_truncated_file(tmp_path, files):
    path = tmp_path / "imgs.gz"
    path.write_bytes(gzip.compress(files["train-images-idx3-ubyte"][:-100]))
    expected = 16 + 5 * 784
    with pytest.raises(MNISTError, match="truncated") as e:
        read_idx(path, 2051)
    msg = str(e.value)
    assert str(path) in msg and str(expected) in msg and str(expected - 100) in msg


def test_trailing_bytes(tmp_path, files):
    path = tmp_path / "labels"
    path.write_bytes(files["train-labels-idx1-ubyte"] + b"\x00")
    with pytest.raises(MNISTError, match="trailing") as e:
        read_idx(path, 2049)
    assert str(path) in str(e.value) and "13" in str(e.value) and "14" in str(e.value)


@pytest.mark.parametrize(
    "content", [b"", b"\x00\x00", b"\x00\x00\x08\x03\x00\x00"], ids=["empty", "2B", "dims-cut"]
)
def test_short_header(tmp_path, content):
    path = tmp_path / "short"
    path.write_bytes(content)
    with pytest.raises(MNISTError, match=r"short|truncated header") as e:
        read_idx(path)
    assert str(path) in str(e.value)


def test_wrong_magic(tmp_path, files):
    path = tmp_path / "labels.gz"
    path.write_bytes(gzip.compress(files["train-labels-idx1-ubyte"]))
    with pytest.raises(MNISTError, match="magic number 2049, expected 2051") as e:
        read_idx(path, 2051)
    assert str(path) in str(e.value)
    (tmp_path / "junk").write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(MNISTError, match="not an IDX file"):
        read_idx(tmp_path / "junk")


def test_corrupt_gzip(tmp_path, files):
    blob = bytearray(gzip.compress(files["train-images-idx3-ubyte"]))
    blob[len(blob) // 2 : len(blob) // 2 + 8] = b"\xff" * 8
    bad, cut = tmp_path / "bad.gz", tmp_path / "cut.gz"
    bad.write_bytes(bytes(blob))
    cut.write_bytes(bytes(blob[: len(blob) // 2]))
    for path in (bad, cut):
        with pytest.raises(MNISTError, match="corrupt gzip") as e:
            read_idx(path, 2051)
        assert str(path) in str(e.value)


def test_md5_mismatch_names_file_and_both_sums(tmp_path, files):
    path = write(tmp_path, files) / "train-labels-idx1-ubyte.gz"
    actual = hashlib.md5(files["train-labels-idx1-ubyte"]).hexdigest()
    with pytest.raises(MNISTError) as e:
        read_idx(path, 2049, md5="0" * 32)
    assert str(path) in str(e.value) and actual in str(e.value) and "0" * 32 in str(e.value)


# --- load_mnist on synthetic files --------------------------------------------------------


def test_load_default_checksums_reject_synthetic_files(data_dir):
    with pytest.raises(MNISTError, match=MD5["train-images-idx3-ubyte"]):
        load_mnist(data_dir, download=False)


def test_checksums_false_skips_the_check(data_dir):
    (x, _), (xt, _) = load_mnist(data_dir, download=False, checksums=False)
    assert x.shape == (5, 784) and xt.shape == (3, 784)


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("flatten", [True, False])
@pytest.mark.parametrize("one_hot", [True, False])
def test_load_options(data_dir, files, normalize, flatten, one_hot):
    (x, t), (xt, tt) = load_mnist(
        data_dir,
        normalize=normalize,
        flatten=flatten,
        one_hot=one_hot,
        download=False,
        checksums=md5s(files),
    )
    raw = np.frombuffer(files["train-images-idx3-ubyte"][16:], np.uint8)
    for images, n in ((x, 5), (xt, 3)):
        assert images.shape == ((n, 784) if flatten else (n, 1, 28, 28))
        assert images.dtype == (np.float32 if normalize else np.uint8)
    if normalize:
        assert x.min() == 0.0 and x.max() == 1.0
        np.testing.assert_array_equal(x.reshape(-1), raw.astype(np.float32) / 255)
    else:
        np.testing.assert_array_equal(x.reshape(-1), raw)
    for labels, n in ((t, 5), (tt, 3)):
        if one_hot:
            assert labels.shape == (n, 10) and labels.dtype == np.float32
            np.testing.assert_array_equal(labels.argmax(1), np.arange(n))
            np.testing.assert_array_equal(labels.sum(1), 1.0)
        else:
            assert labels.dtype == np.int64
            np.testing.assert_array_equal(labels, np.arange(n))


def test_dtype_float64(data_dir, files):
    (x, t), _ = load_mnist(
        data_dir, download=False, checksums=md5s(files), one_hot=True, dtype=np.float64
    )
    assert x.dtype == np.float64 and t.dtype == np.float64


def test_raw_uncompressed_files(tmp_path, files):
    d = write(tmp_path / "raw", files, gz=False)
    (x, t), _ = load_mnist(d, download=False, checksums=md5s(files))
    assert x.shape == (5, 784) and t.tolist() == [0, 1, 2, 3, 4]


def test_regzipped_file_with_same_content_is_accepted(tmp_path, files):
    d = write(tmp_path / "m", files)
    name = "t10k-images-idx3-ubyte.gz"
    before = (d / name).read_bytes()
    (d / name).write_bytes(gzip.compress(files["t10k-images-idx3-ubyte"], 1, mtime=12345))
    assert (d / name).read_bytes() != before
    _, (xt, _) = load_mnist(d, download=False, checksums=md5s(files))
    assert xt.shape == (3, 784)


@pytest.mark.parametrize("labels", [4, 2], ids=["more-labels", "fewer-labels"])
def test_count_mismatch(tmp_path, files, labels):
    """Either way round: 3 images with 4 labels, or with 2, is refused (never truncated)."""
    files["t10k-labels-idx1-ubyte"] = idx_bytes(2049, (labels,), bytes(range(labels)))
    d = write(tmp_path / "m", files)
    with pytest.raises(MNISTError, match=rf"3 images but .* {labels} labels") as e:
        load_mnist(d, download=False, checksums=md5s(files))
    assert "t10k-images-idx3-ubyte.gz" in str(e.value)
    assert "t10k-labels-idx1-ubyte.gz" in str(e.value)


def test_label_out_of_range(tmp_path, files):
    files["train-labels-idx1-ubyte"] = idx_bytes(2049, (5,), bytes([0, 1, 10, 3, 255]))
    d = write(tmp_path / "m", files)
    with pytest.raises(MNISTError, match=r"2 labels out of range 0\.\.9") as e:
        load_mnist(d, download=False, checksums=md5s(files))
    assert str(d / "train-labels-idx1-ubyte.gz") in str(e.value)


def test_wrong_image_size(tmp_path, files):
    files["train-images-idx3-ubyte"] = idx_bytes(2051, (5, 27, 28), bytes(5 * 27 * 28))
    d = write(tmp_path / "m", files)
    with pytest.raises(MNISTError, match=r"\(27, 28\), expected \(28, 28\)"):
        load_mnist(d, download=False, checksums=md5s(files))


def test_lookup_order(tmp_path, monkeypatch, files):
    other = synthetic(n_train=7, seed=1)
    cache = tmp_path / "xdg-cache" / "funcnet" / "mnist"
    write(cache, files)
    assert find_or_download("train-images-idx3-ubyte", download=False).parent == cache
    env_dir = write(tmp_path / "env", other)
    monkeypatch.setenv("FUNCNET_DATA", str(env_dir))
    path = find_or_download("train-images-idx3-ubyte.gz", download=False)
    assert path == env_dir / "train-images-idx3-ubyte.gz"
    explicit = write(tmp_path / "explicit", files, gz=False)
    assert find_or_download("train-images-idx3-ubyte", explicit, download=False) == (
        explicit / "train-images-idx3-ubyte"
    )
    (x, _), _ = load_mnist(download=False, checksums=md5s(other))
    assert len(x) == 7


def test_missing_files_without_download(tmp_path):
    d = tmp_path / "empty"
    with pytest.raises(MNISTError, match="download=False") as e:
        load_mnist(d, download=False)
    msg = str(e.value)
    assert str(d) in msg and str(tmp_path / "xdg-cache" / "funcnet" / "mnist") in msg
    assert "FUNCNET_DATA" in msg and all(f"{n}.gz" in msg for n in NAMES)


def test_unknown_name_and_bad_checksums_argument(tmp_path):
    with pytest.raises(ValueError, match="unknown MNIST file"):
        find_or_download("cifar.gz", tmp_path, download=False)
    with pytest.raises(TypeError):
        load_mnist(tmp_path, download=False, checksums=None)


# --- download from a local HTTP server ----------------------------------------------------


class _Served:
    """A real HTTP server on 127.0.0.1 (a free port) in a thread: ``serve(Handler)`` starts
    it and sets ``url``; ``close()`` stops it."""

    def serve(self, handler) -> None:
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


class Server(_Served):
    """A real HTTP server on 127.0.0.1 with one mirror per URL prefix.

    ``/good/<file>`` serves the gzipped file, ``/bad/<file>`` serves it with one byte
    flipped inside the payload (valid gzip, wrong md5), ``/short/<file>`` announces the full
    length but hangs up half way, ``/trickle/`` sends a byte every 0.2 s, ``/silent/`` never
    answers; anything else is 404.
    """

    def __init__(self, files: dict[str, bytes]):
        self.blobs = {f"{n}.gz": gzip.compress(data, mtime=0) for n, data in files.items()}
        self.bad = {}
        for n, data in files.items():
            flipped = bytearray(data)
            flipped[-1] ^= 0xFF
            self.bad[f"{n}.gz"] = gzip.compress(bytes(flipped), mtime=0)
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append(self.path)
                _, mirror, name = [*self.path.split("/", 2), "", ""][:3]
                if mirror == "silent":  # accepts, then never answers
                    time.sleep(3)
                    return
                blob = {
                    "good": outer.blobs, "short": outer.blobs, "bad": outer.bad,
                    "trickle": outer.blobs,
                }.get(mirror, {}).get(name)  # fmt: skip
                if blob is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(blob)))
                self.end_headers()
                if mirror == "trickle":  # a byte every 0.2 s, for at most 5 s
                    for i in range(25):
                        self.wfile.write(blob[i : i + 1])
                        self.wfile.flush()
                        time.sleep(0.2)
                    return
                self.wfile.write(blob[: len(blob) // 2] if mirror == "short" else blob)

            def log_message(self, *args):
                pass

        self.serve(Handler)


@pytest.fixture
def server(files):
    s = Server(files)
    yield s
    s.close()


@pytest.fixture
def dead_url():
    """A URL on a port that is bound but never listens, so connections are refused at once."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/mnist/"
    sock.close()


def test_download_into_data_dir(tmp_path, server, files, capsys):
    d = tmp_path / "new" / "dir"
    (x, _), (_, tt) = load_mnist(
        d, mirrors=[server.url + "/good/"], checksums=md5s(files), progress=True
    )
    assert x.shape == (5, 784) and tt.tolist() == [0, 1, 2]
    assert sorted(os.listdir(d)) == sorted(f"{n}.gz" for n in NAMES)
    assert sorted(server.requests) == sorted(f"/good/{n}.gz" for n in NAMES)
    err = capsys.readouterr().err
    assert "train-images-idx3-ubyte.gz" in err and "100%" in err
    load_mnist(d, mirrors=[server.url + "/good/"], checksums=md5s(files))
    assert len(server.requests) == 4  # second call uses the files on disk


def test_download_into_cache_without_progress(tmp_path, server, files, capsys):
    load_mnist(mirrors=server.url + "/good", checksums=md5s(files), progress=False)
    cache = tmp_path / "xdg-cache" / "funcnet" / "mnist"
    assert sorted(os.listdir(cache)) == sorted(f"{n}.gz" for n in NAMES)
    assert capsys.readouterr().err == ""


def test_first_mirror_404_then_second(tmp_path, server, files):
    mirrors = [server.url + "/missing/", server.url + "/good/"]
    load_mnist(tmp_path / "m", mirrors=mirrors, checksums=md5s(files))
    name = "train-labels-idx1-ubyte.gz"
    assert server.requests.count(f"/missing/{name}") == server.requests.count(f"/good/{name}") == 1


def test_first_mirror_refused_then_second(tmp_path, server, files, dead_url):
    (x, _), _ = load_mnist(
        tmp_path / "m", mirrors=[dead_url, server.url + "/good/"], checksums=md5s(files)
    )
    assert len(x) == 5


@pytest.mark.parametrize("mirror", ["bad", "short"])
def test_corrupt_download_rejected_and_leaves_nothing(tmp_path, server, files, mirror):
    d = tmp_path / "m"
    url = f"{server.url}/{mirror}/"
    with pytest.raises(MNISTError, match="md5" if mirror == "bad" else "cut short") as e:
        find_or_download("t10k-images-idx3-ubyte", d, mirrors=[url], checksums=md5s(files))
    assert url + "t10k-images-idx3-ubyte.gz" in str(e.value)
    assert not d.exists()  # nothing left, not even the folder made for the download
    # The next mirror is tried after a bad one, and only verified bytes end up on disk.
    path = find_or_download(
        "t10k-images-idx3-ubyte", d, mirrors=[url, server.url + "/good/"], checksums=md5s(files)
    )
    assert os.listdir(d) == [path.name]
    assert gzip.decompress(path.read_bytes()) == files["t10k-images-idx3-ubyte"]


def test_offline_error_is_helpful(tmp_path, dead_url):
    d = tmp_path / "nowhere"
    with pytest.raises(MNISTError) as e:
        load_mnist(d, mirrors=[dead_url, dead_url.replace("/mnist/", "/other/")])
    msg = str(e.value)
    assert f"{dead_url}train-images-idx3-ubyte.gz" in msg and "/other/" in msg
    assert "refused" in msg.lower()
    assert str(d) in msg and str(tmp_path / "xdg-cache" / "funcnet" / "mnist") in msg
    assert "FUNCNET_DATA" in msg and all(f"{n}.gz" in msg for n in NAMES)
    assert not d.exists()  # the folder made for the download is gone with it


# --- real MNIST -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_mnist(mnist_dir):  # mnist_dir: tests/conftest.py
    return load_mnist(mnist_dir, download=False)


def test_real_mnist_shapes_and_labels(real_mnist):
    (x, t), (xt, tt) = real_mnist
    assert x.shape == (60000, 784) and xt.shape == (10000, 784)
    assert x.dtype == xt.dtype == np.float32 and t.dtype == tt.dtype == np.int64
    assert 0.0 == x.min() and x.max() == 1.0
    np.testing.assert_array_equal(
        np.bincount(t, minlength=10), [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    )
    np.testing.assert_array_equal(
        np.bincount(tt, minlength=10), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    )
    assert x.mean(dtype=np.float64) == pytest.approx(0.1306604762738429, abs=1e-7)


def test_real_mnist_checksums(mnist_dir):
    published = {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    }
    assert published == MD5
    for name, md5 in published.items():
        path = find_or_download(name, mnist_dir, download=False)
        raw = path.read_bytes()
        data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        assert hashlib.md5(data).hexdigest() == md5, path


def test_real_mnist_raw_uint8(mnist_dir, real_mnist):
    _, (xt, tt) = real_mnist
    raw = read_idx(find_or_download("t10k-images-idx3-ubyte", mnist_dir, download=False), 2051)
    assert raw.dtype == np.uint8 and raw.shape == (10000, 28, 28)
    np.testing.assert_array_equal(xt, raw.reshape(10000, 784).astype(np.float32) / 255)
    assert tt[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert real_mnist[0][1][:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]


def test_a_failed_download_leaves_no_folder_behind(tmp_path, server):
    typo = tmp_path / "mnsit" / "data"
    with pytest.raises(MNISTError, match="could not be downloaded"):
        load_mnist(typo, mirrors=[server.url + "/missing/"], progress=False)
    assert not (tmp_path / "mnsit").exists()


def test_unreadable_file_and_file_as_folder_are_mnist_errors(tmp_path, files, monkeypatch):
    d = write(tmp_path / "m", files)
    with pytest.raises(MNISTError, match=r"is a file; give the folder"):
        load_mnist(d / "t10k-labels-idx1-ubyte.gz", download=False)
    # Mode 000 does not stop root, who runs the tests: refuse the read the way the OS would.
    real = Path.read_bytes

    def read_bytes(path):
        if path.name == "t10k-labels-idx1-ubyte.gz":
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    with pytest.raises(MNISTError, match=r"t10k-labels-idx1-ubyte.gz: cannot be read \(Permission"):
        load_mnist(d, download=False, checksums=md5s(files))


def test_a_trickling_or_silent_mirror_is_given_up_on_time(tmp_path, server, files):
    start = time.monotonic()
    with pytest.raises(MNISTError, match=r"deadline of 1 s passed with \d+ of \d+ bytes") as e:
        find_or_download(
            "t10k-labels-idx1-ubyte", tmp_path, mirrors=[server.url + "/trickle/"],
            checksums=md5s(files), deadline=1.0, progress=False,
        )  # fmt: skip
    assert time.monotonic() - start < 4  # one more byte's wait at most, not the 5 s transfer
    assert not list(tmp_path.iterdir())
    start = time.monotonic()
    with pytest.raises(MNISTError, match=r"timed out") as e:
        find_or_download(
            "t10k-labels-idx1-ubyte", tmp_path, mirrors=[server.url + "/silent/"],
            checksums=md5s(files), timeout=0.5, progress=False,
        )  # fmt: skip
    assert time.monotonic() - start < 2.5 and "silent" in str(e.value)


def test_progress_is_shown_before_the_first_byte(tmp_path, server, files, capsys):
    find_or_download(
        "t10k-labels-idx1-ubyte", tmp_path, mirrors=[server.url + "/good/"],
        checksums=md5s(files), progress=True,
    )  # fmt: skip
    assert "connecting to 127.0.0.1:" in capsys.readouterr().err


def test_a_part_file_left_by_a_killed_download_is_removed(tmp_path, server, files):
    stale = tmp_path / ".t10k-labels-idx1-ubyte.gz.1234.abcd.part"
    stale.write_bytes(b"half")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    fresh = tmp_path / ".t10k-labels-idx1-ubyte.gz.999.ffff.part"  # another run, still going
    fresh.write_bytes(b"in flight")
    find_or_download(
        "t10k-labels-idx1-ubyte", tmp_path, mirrors=[server.url + "/good/"],
        checksums=md5s(files), deadline=600, progress=False,
    )  # fmt: skip
    assert not stale.exists() and fresh.exists()


# --- sizes capped: a hostile or broken server --------------------------------------------


def _bomb(size: int) -> bytes:
    """A gzip file that decompresses to ``size`` zero bytes: 16 MiB members, repeated."""
    member = gzip.compress(bytes(min(size, 16 << 20)), compresslevel=9, mtime=0)
    return member * max(1, size // (16 << 20))


class HostileServer(_Served):
    """``/huge/`` announces 10¹³ bytes and sends zeros until the client hangs up;
    ``/endless/`` sends zeros with no length at all; ``/bomb/`` serves (with its true length)
    a gzip bomb: 12 MB of zeros for the labels files, 1 GiB for the training images."""

    def __init__(self):
        self.sent: dict[str, int] = {}
        outer = self
        small, large = _bomb(12 << 20), _bomb(1 << 30)

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self):
                _, mirror, name = [*self.path.split("/", 2), "", ""][:3]
                self.send_response(200)
                if mirror == "bomb":
                    blob = large if name.startswith("train-images") else small
                    self.send_header("Content-Length", str(len(blob)))
                    self.end_headers()
                    self.wfile.write(blob)
                    return
                if mirror == "huge":
                    self.send_header("Content-Length", str(10**13))
                self.end_headers()
                chunk, sent = bytes(1 << 16), 0
                try:
                    while sent < 1 << 30:
                        self.wfile.write(chunk)
                        sent += len(chunk)
                        outer.sent[self.path] = sent
                except OSError:  # the client hung up
                    pass

            def log_message(self, *args):
                pass

        self.serve(Handler)


@pytest.fixture(scope="module")
def hostile():
    s = HostileServer()
    yield s
    s.close()


def _peak_mib(fn):
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(MNISTError) as e:
            fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return str(e.value), peak


def test_a_server_announcing_a_huge_file_is_refused_before_the_body(tmp_path, hostile):
    name = "t10k-labels-idx1-ubyte"
    msg, _ = _peak_mib(
        lambda: find_or_download(name, tmp_path, mirrors=[hostile.url + "/huge/"], progress=False)
    )
    assert "the server announces 10000000000000 bytes; t10k-labels-idx1-ubyte.gz is at most" in msg
    assert not list(tmp_path.iterdir())


def test_a_server_sending_without_end_is_cut_at_the_files_size(tmp_path, hostile):
    name = "train-labels-idx1-ubyte"
    msg, peak = _peak_mib(
        lambda: find_or_download(
            name, tmp_path, mirrors=[hostile.url + "/endless/"], progress=False
        )
    )
    cap = 60008 + 60 + 4096
    assert f"more than {cap} bytes sent" in msg
    assert not list(tmp_path.iterdir()) and peak < 4


@pytest.mark.parametrize(("name", "budget"), [("t10k-labels-idx1-ubyte", 4),
                                              ("train-images-idx3-ubyte", 160)])  # fmt: skip
def test_a_gzip_bomb_download_is_refused_at_the_files_size(tmp_path, hostile, name, budget):
    msg, peak = _peak_mib(
        lambda: find_or_download(name, tmp_path, mirrors=[hostile.url + "/bomb/"], progress=False)
    )
    from funcnet.data import SIZES

    assert f"decompresses to more than the {SIZES[name]} bytes it should" in msg
    # 12 MB or 1 GiB of zeros: only what the file may hold is ever decompressed (the
    # training images' 47 MB, plus the 1 MB bomb itself).
    assert peak < budget, f"{peak:.0f} MiB"
    assert not list(tmp_path.iterdir())


def test_a_local_gzip_bomb_or_oversized_file_is_refused(tmp_path, files):
    d = write(tmp_path / "m", files)
    (d / "t10k-labels-idx1-ubyte.gz").write_bytes(_bomb(12 << 20))
    msg, peak = _peak_mib(lambda: load_mnist(d, checksums=False))
    assert "t10k-labels-idx1-ubyte.gz: decompresses to more than the 10008 bytes" in msg
    assert peak < 4
    (d / "t10k-labels-idx1-ubyte.gz").write_bytes(bytes(1 << 20))
    msg, _ = _peak_mib(lambda: load_mnist(d, checksums=False))
    assert f"t10k-labels-idx1-ubyte.gz: {1 << 20} bytes, more than the file it should be" in msg
