"""`funcnet` as the system treats it: a full or read-only disk at the end of a run, output
paths that conflict, SIGTERM and SIGHUP as SLURM, Kubernetes and `timeout` send them, an
early Ctrl-C, and a stdout closed by `| head -1`.  Real processes throughout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from funcnet import checkpoints, models

FUNCNET = [sys.executable, "-m", "funcnet"]


@pytest.fixture
def mnist_env(mnist_dir, tmp_path):
    # The fallback of a failed write goes to the temp folder: this test's own.
    (tmp_path / "tmp").mkdir()
    return {**os.environ, "FUNCNET_DATA": str(mnist_dir), "TMPDIR": str(tmp_path / "tmp")}


def _mount_tmpfs(folder, size="64k") -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    cmd = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)]
    return subprocess.run(cmd, capture_output=True).returncode == 0


def test_save_and_checkpoint_to_one_file_are_refused_before_any_work(tmp_path):
    f = tmp_path / "m.npz"
    r = subprocess.run([*FUNCNET, "train", "--save", str(f), "--checkpoint", str(f)],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith(
        f"funcnet train: error: --save and --checkpoint are the same file {f}"
    )
    assert r.stderr.count("\n") == 1 and not f.exists()


def test_a_full_disk_at_the_end_keeps_the_params_and_says_where(tmp_path, mnist_env):
    fs = tmp_path / "fs"
    fs.mkdir()
    if not _mount_tmpfs(fs):
        pytest.skip("cannot mount a tmpfs here (needs root); tests/test_checkpoints.py "
                    "simulates ENOSPC instead")  # fmt: skip
    try:
        save, run = fs / "m.npz", fs / "run.npz"
        argv = ["train", "--subset", "500", "--test-subset", "100", "--epochs", "2",
                "--no-plot", "--save", str(save), "--checkpoint", str(run)]  # fmt: skip
        r = subprocess.run([*FUNCNET, *argv], capture_output=True, text=True, timeout=300,
                           env=mnist_env)  # fmt: skip
    finally:
        subprocess.run(["umount", "-l", str(fs)], capture_output=True)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    tmp = tmp_path / "tmp"
    lines = r.stderr.strip().splitlines()
    # The run went on past both failed checkpoints, and says where each thing went.
    assert [line.split(";")[0] for line in lines] == [
        f"funcnet train: cannot write {run} (No space left on device)",
        f"funcnet train: cannot write {run} (No space left on device)",
        f"funcnet train: cannot write {save} (No space left on device)",
    ]
    fallback = tmp / f"funcnet-{r.stderr.split('funcnet-')[-1].split()[0]}"
    assert lines[-1].endswith(f"the params are in {fallback} instead")
    net = models.two_layer_net(100)
    checkpoints.load_params(fallback, net.init(0, (-1, 784))[1])
    assert "the run checkpoint of epoch 2 are in" in lines[1]
    assert not list(tmp.glob(".*.part"))
