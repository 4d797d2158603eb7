"""`funcnet` as the system treats it: a full or read-only disk at the end of a run, output
paths that conflict, SIGTERM and SIGHUP as SLURM, Kubernetes and `timeout` send them, an
early Ctrl-C, and a stdout closed by `| head -1`.  Real processes throughout."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from commands import FUNCNET, interruptible, signal_after, start

from funcnet import checkpoints, models


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
    # The run's own summary names the file that holds the params, not the one that failed.
    assert f"params saved to {fallback}\n" in r.stdout
    assert f"params saved to {save}\n" not in r.stdout
    assert not list(tmp.glob(".*.part"))


def _train(env, *argv):
    argv = ["train", "--subset", "1000", "--test-subset", "200", "--epochs", "1000",
            "--no-plot", *argv]  # fmt: skip
    return start(argv, env)


@pytest.mark.parametrize(("sig", "status"), [("SIGTERM", 143), ("SIGHUP", 129)])
def test_sigterm_and_sighup_end_a_run_as_ctrl_c_does(tmp_path, mnist_env, sig, status):
    save, run = tmp_path / "m.npz", tmp_path / "run.npz"
    proc = _train(mnist_env, "--save", str(save), "--checkpoint", str(run))
    _, _, err = signal_after(proc, "epoch   2/", getattr(signal, sig), wait=120)
    assert proc.returncode == status, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("funcnet train: interrupted after "), err
    epoch = int(lines[0].split("the params of epoch ")[1].split()[0])
    assert epoch >= 2 and lines[0].endswith(f"are saved to {save}")
    net = models.two_layer_net(100)
    checkpoints.load_params(save, net.init(0, (-1, 784))[1])
    assert checkpoints.run_info(run)[0] >= epoch
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz", "run.npz", "tmp"]


@pytest.mark.parametrize("delay", [0.4, 0.8, 1.2, 1.6, 2.0])
def test_an_early_ctrl_c_is_one_line_and_never_swallowed(mnist_env, delay):
    # JAX's gc callback (_xla_gc_callback) runs often while it starts and compiles, and
    # Python prints a KeyboardInterrupt raised inside it as "Exception ignored" and drops
    # it; before main(), while the package imports NumPy and JAX, it would be a traceback.
    proc = _train(mnist_env)
    try:
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert "Exception ignored" not in err, err
    if "Traceback" in err and f"{os.sep}funcnet{os.sep}" not in err:
        # Python's own start-up (its site module), before the package's first line: on a
        # loaded machine it can take longer than the delay.  Nothing of funcnet ran yet.
        return
    assert "Traceback" not in err, err
    assert proc.returncode == 130, err
    assert err.count("\n") == 1 and err.startswith("funcnet train: interrupted"), err


def test_a_signal_while_the_command_imports_is_one_line():
    # The moment the package is imported, before NumPy and JAX are: one line, 128 + signal.
    code = (
        "import os, signal, sys; sys.orig_argv = ['python', '-m', 'funcnet', 'train']; "
        "import funcnet._starting; os.kill(os.getpid(), signal.SIGTERM); import time; "
        "time.sleep(30)"
    )
    r = subprocess.run([sys.executable, "-c", code, "train"], capture_output=True, text=True,
                       timeout=60)  # fmt: skip
    assert (r.returncode, r.stderr) == (143, "funcnet train: interrupted while starting\n")
    # As a library (any other program): the handlers stay as they were.
    code = "import signal, funcnet; assert signal.getsignal(2) is signal.default_int_handler"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


@pytest.mark.parametrize("command", [["demo"], ["demo", "--no-plot"], ["--help"]])
def test_a_closed_stdout_ends_quietly(command):
    r = subprocess.run(f"{sys.executable} -m funcnet {' '.join(command)} | head -1",
                       shell=True, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.stdout.count("\n") == 1 and r.stderr == ""


def test_a_run_with_a_closed_stdout_still_writes_its_files(tmp_path, mnist_env):
    save, run = tmp_path / "m.npz", tmp_path / "run.npz"
    cmd = (f"{sys.executable} -m funcnet train --subset 500 --test-subset 100 --epochs 2 "
           f"--save {save} --checkpoint {run}; echo status $? >&2")  # fmt: skip
    r = subprocess.run(f"({cmd}) | head -1", shell=True, capture_output=True, text=True,
                       timeout=300, env=mnist_env)  # fmt: skip
    assert r.stdout.startswith("pipeline(Dense(100)") and r.stdout.count("\n") == 1
    assert r.stderr == "status 0\n"
    assert checkpoints.run_info(run)[0] == 2 and save.is_file()


STUCK = """
import ctypes, sys
from funcnet import _signals
_signals.GRACE = 1.0  # the default waits out a long XLA compilation
mutex = ctypes.create_string_buffer(64)  # a zeroed glibc mutex: unlocked, not recursive
libc = ctypes.CDLL(None)
with _signals.handled("stuck"):
    print("ready", flush=True)
    libc.pthread_mutex_lock(mutex)
    libc.pthread_mutex_lock(mutex)  # blocks in C for ever: no bytecode, no Python handler
"""


@pytest.mark.parametrize(("sig", "status"), [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_ends_a_process_stuck_in_c_code(sig, status):
    # A collective waiting for a dead or hung peer blocks the main thread in C++ like this.
    pipe = subprocess.PIPE
    proc = subprocess.Popen([sys.executable, "-c", STUCK], stdout=pipe, stderr=pipe, text=True,
                            preexec_fn=interruptible)  # fmt: skip
    try:
        assert proc.stdout.readline() == "ready\n"
        time.sleep(0.2)
        start = time.monotonic()
        proc.send_signal(getattr(signal, sig))
        _, err = proc.communicate(timeout=30)
        took = time.monotonic() - start
    finally:
        proc.kill()
    assert proc.returncode == status and took < 10, (took, err)
    assert err == (
        f"stuck: {sig}, but the computation under way has not returned for 1 s (a peer gone "
        "or hung?); ending the process; finished checkpoints are on disk\n"
    )


def test_a_signal_handled_at_once_does_not_wake_the_watchdog_later():
    # The handler often runs before the watchdog thread reads the signal's byte: a watchdog
    # waiting for a *further* run of the handler would end the process GRACE s later.
    script = (
        "import os, signal, time\n"
        "from funcnet import _signals\n"
        "_signals.GRACE = 0.5\n"
        "with _signals.handled('t'):\n"
        "    try:\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "        time.sleep(0.2)\n"
        "    except KeyboardInterrupt:\n"
        "        print('handled')\n"
        "time.sleep(1.5)\n"
        "print('alive')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, preexec_fn=interruptible)  # fmt: skip
    assert (done.returncode, done.stdout.split(), done.stderr) == (0, ["handled", "alive"], "")


def test_a_program_run_with_dash_m_that_imports_funcnet_keeps_its_handlers(tmp_path):
    # Only the funcnet command itself takes over the signals while it starts.
    (tmp_path / "prog").mkdir()
    (tmp_path / "prog" / "__init__.py").write_text(
        "import signal\nimport funcnet\n"
        "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    done = subprocess.run(
        [sys.executable, "-m", "prog"], capture_output=True, text=True, cwd=tmp_path, env=env,
        timeout=120, preexec_fn=interruptible,
    )  # fmt: skip
    assert done.stdout.split()[:1] == ["True"], done.stderr
