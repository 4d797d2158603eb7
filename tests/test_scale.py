"""Data parallel over devices and processes (``funcnet.parallel``): the numbers of one device
on 2 and 4 host devices and on two processes over 127.0.0.1, a dead peer that stops the
run, resumes on other device counts, and the command's flags refused before any work.

The host device count is fixed when JAX starts, so the runs are fresh interpreters
(``tests/scale_runs.py``) with ``--xla_force_host_platform_device_count=N`` in ``XLA_FLAGS``;
every one is bounded by a timeout and killed at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from commands import FUNCNET
from nets import mlp

from funcnet import checkpoints, optim, parallel, train
from funcnet.train import runners

ROOT = Path(__file__).resolve().parent.parent
RUNS = Path(__file__).resolve().parent / "scale_runs.py"
TOL = 2e-5  # relative; float32 summation order gives about 1e-6 here


def env(devices: int, **more) -> dict:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    # After the run's own XLA_FLAGS (conftest's code generator), which it keeps: the last
    # device count given wins.
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
    return {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu", "PYTHONPATH": path, **more}


def job(*args, devices: int = 4, **more) -> dict:
    out = subprocess.run(
        [sys.executable, str(RUNS), *args], env=env(devices, **more), capture_output=True,
        text=True, timeout=180,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(text: str, tmp_path, procs, wait: float) -> None:
    """Until process 0's stdout holds ``text``; fails (with process 0's stderr) after
    ``wait`` seconds or when one of ``procs`` has ended first."""
    deadline = time.monotonic() + wait
    while text not in (tmp_path / "0.out").read_text():
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), (
            tmp_path / "0.err"
        ).read_text()[-2000:]
        time.sleep(0.1)


@contextlib.contextmanager
def started(argvs, folder: Path, devices: int = 2, **kw):
    """Processes with their stdout and stderr in files of ``folder``; all killed at the end."""
    procs = []
    try:
        for i, argv in enumerate(argvs):
            out, err = (open(folder / f"{i}.{s}", "w") for s in ("out", "err"))
            with out, err:
                procs.append(subprocess.Popen(argv, stdout=out, stderr=err, env=env(devices), **kw))
        yield procs
    finally:
        for p in procs:
            p.kill()
            p.wait(timeout=30)


def same(a, b, **tol) -> None:
    """Two params trees, leaf by leaf, to ``tol`` (``np.testing.assert_allclose``'s)."""
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tol)


def wait_all(procs, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    for p in procs:
        p.wait(timeout=max(1.0, deadline - time.monotonic()))


@pytest.mark.parametrize("kind", ["step", "scan"])
def test_two_and_four_devices_train_like_one(kind):
    r = job("equal", kind)
    assert r.pop("autodiff_off")  # the hand-written backward ran: JAX's autodiff would raise
    assert r.pop("indivisible") == (
        "fit: batch_size 30 does not split evenly over 4 devices (it must be a multiple of 4)"
    )
    assert set(r) == ({"sgd-4", "adam-2"} if kind == "scan" else {"sgd-2", "adam-4"})
    for run, diff in r.items():
        assert diff["params"] < TOL and diff["loss"] < 1e-5, (run, diff)


def test_collectives_batchnorm_and_dropout_under_sharding():
    # It reads the compiled programs' all-reduces: XLA's optimizations on, as a user runs.
    r = job("collectives", JAX_DISABLE_MOST_OPTIMIZATIONS="0")
    assert r["threefry_partitionable"]
    # The step's all-reduce carries the gradients plus the loss's scalar sums (and, with an
    # indexing the partitioner cannot see as row-wise, up to B = 100 values more).
    grads = r["gradient_elements"]
    for program in ("mlp_step", "mlp_scan"):
        ops, elements = r[program]
        assert ops <= 3 and grads <= elements <= grads + 100 + 4, (program, r[program], grads)
    for d in ("bn2d", "bn4d"):
        assert r[f"{d}_vs_vjp"] < 1e-12 and r[f"{d}_vs_one_device"] < 1e-12
        assert r[f"{d}_local_stats_differ"] > 0.1  # statistics of the global batch
    assert r["dropout_same_mask"]


def test_two_processes_equal_four_devices_checkpoint_once_and_resume(tmp_path):
    port = free_port()
    argvs = [
        [sys.executable, str(RUNS), "process", str(i), str(port), str(tmp_path)] for i in (0, 1)
    ]
    with started(argvs, tmp_path) as procs:
        wait_all(procs, 150)
    outs = [(tmp_path / f"{i}.out").read_text() for i in (0, 1)]
    for i, p in enumerate(procs):
        err = (tmp_path / f"{i}.err").read_text()
        assert p.returncode == 0, err[-3000:]
        assert json.loads(outs[i].strip().splitlines()[-1]) == {"devices": 4, "local": 2}
        # The peer watch has ended before the interpreter finalizes, which would end it
        # with pthread_exit, an abort when that finds it inside a C++ call.
        assert "threads at exit: []" in err, err[-3000:]
    assert re.findall(r"process \d wrote \S+", outs[0]) == [
        "process 0 wrote run-1.npz", "process 0 wrote run-2.npz",
    ]  # fmt: skip
    assert "wrote" not in outs[1]
    r = job("reference", str(tmp_path))
    assert r.pop("saved_epoch") == 1
    assert set(r) == {"process_step", "process_scan", "resume-1", "resume-2", "resume-4"}
    for what, diff in r.items():
        assert diff < TOL, (what, diff)


def test_a_dead_process_stops_the_other_in_bounded_time(tmp_path):
    port = free_port()
    argvs = [[sys.executable, str(RUNS), "spin", str(i), str(port)] for i in (0, 1)]
    with started(argvs, tmp_path) as procs:
        _wait_for("epoch 1", tmp_path, procs[:1], 90)
        procs[1].send_signal(signal.SIGKILL)
        start = time.monotonic()
        procs[0].wait(timeout=60)
        took = time.monotonic() - start
    err = (tmp_path / "0.err").read_text()
    lines = [x for x in err.splitlines() if not x.startswith("[Gloo]")]
    assert took < 30, took  # the peer timeout is 10 s; the watch acts after half of it
    # funcnet's peer watch (half the timeout) says it in one line, long before JAX's
    # heartbeat abort (twice the timeout); gloo's throw from a broken link is one line too.
    # Or the broken link fails the step first: fit raises JAX's error (this job leaves it
    # uncaught), and at exit the dead peer is one line instead of JAX's shutdown abort.
    assert procs[0].returncode == 1, err[-2000:]
    assert "Check failure" not in err and "terminate called" not in err, err[-2000:]
    assert lines[-1].startswith("funcnet: "), err[-2000:]
    if len(lines) == 1:
        assert lines[0].endswith("this process stops too; finished checkpoints are on disk")
    else:
        assert lines[0] == "Traceback (most recent call last):", err[-2000:]
        assert "jax.errors.JaxRuntimeError: " in err, err[-2000:]
        assert lines[-1].startswith("funcnet: process 1 did not come to the end of the run")


@pytest.mark.parametrize(("how", "why"), [
    ("dies", "process 1 did not come to the end of the run (dead, stopped or hung)"),
    ("lingers", "process 1 did not come to the end of the run within 6 s (still at work, or "
                "waiting for this one?)"),
])  # fmt: skip
def test_a_peer_dead_or_late_when_a_process_comes_to_its_exit_is_one_line(tmp_path, how, why):
    port = free_port()
    argvs = [[sys.executable, str(RUNS), "done_early", str(i), str(port), how] for i in (0, 1)]
    start = time.monotonic()
    with started(argvs, tmp_path, devices=1) as procs:
        procs[0].wait(timeout=90)
        took = time.monotonic() - start
    err = (tmp_path / "0.err").read_text()
    lines = [x for x in err.splitlines() if not x.startswith("[Gloo]")]
    assert json.loads((tmp_path / "0.out").read_text().splitlines()[-1]) == {"done": True}
    assert procs[0].returncode == 1 and len(lines) == 1, err[-2000:]
    assert lines[0] == f"funcnet: {why}; this process ends without waiting for it"
    assert took < 50, took  # the peer timeout of 6 s (half of it for a dead peer) + start-up


THROW_IN_A_THREAD = """
import ctypes, sys, threading, time
from funcnet import _terminate
assert _terminate.install("funcnet x", "a test")
if sys.argv[1] == "restored":
    _terminate.restore()
cxx = ctypes.CDLL("libstdc++.so.6")
throw = lambda: cxx._ZSt20__throw_length_errorPKc(b"thrown where nothing catches it")
threading.Thread(target=throw).start()
time.sleep(60)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="throws through libstdc++")
def test_a_cxx_exception_nothing_catches_is_one_line_and_status_1(tmp_path):
    # What gloo does from its own thread when a peer dies mid-collective; as C++ has it,
    # the whole process aborts (status 134) with the exception's text.
    def run(mode):  # in tmp_path: where an abort's core file would go, if one is written
        argv = [sys.executable, "-c", THROW_IN_A_THREAD, mode]
        return subprocess.run(argv, env=env(1), capture_output=True, text=True, timeout=60,
                              cwd=tmp_path)  # fmt: skip

    ours = run("installed")
    assert ours.returncode == 1 and ours.stderr == (
        "funcnet x: std::length_error in a C++ thread of JAX's runtime (a test); this process "
        "stops too; finished checkpoints are on disk\n"
    ), ours.stderr
    default = run("restored")
    assert default.returncode == -signal.SIGABRT, default.stderr
    assert "terminate called after throwing an instance of 'std::length_error'" in default.stderr


@contextlib.contextmanager
def busy_core():
    """Another process keeping one core busy, as on a shared machine."""
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        spin.kill()
        spin.wait(timeout=30)


@pytest.mark.slow
def test_per_step_epochs_on_more_host_devices_than_cores_with_a_core_busy(tmp_path):
    # XLA's CPU client launches each device's part of a step from the pool of threads that
    # runs the devices' programs (4 threads for 4 devices on 2 cores); with steps queued
    # unbounded, a launch that found 32 programs of its device in flight waited for one in
    # such a thread, and the step being computed lacked the thread for its fourth device:
    # the run aborted in XLA's rendezvous ("only 3 of them arrived"), here within one epoch
    # of 400 steps about half the time (unbounded: runners.IN_FLIGHT = 0).
    for _ in range(2):
        with busy_core():
            r = job("flood", "400", str(runners.IN_FLIGHT), "4")
        assert r == {"steps": 400, "finite": True}


@pytest.mark.slow
def test_the_per_step_devices_4_command_on_full_mnist_with_a_core_busy(tmp_path, mnist_dir):
    # The command of the docs as a user ran it (it aborted after about a minute).
    argv = ["train", "--devices", "4", "--epochs", "2", "--no-plot", "--data-dir", str(mnist_dir),
            "--save", str(tmp_path / "p.npz")]  # fmt: skip
    with busy_core():
        out = subprocess.run([*FUNCNET, *argv], capture_output=True, text=True, timeout=600,
                             env=env(1))  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "epoch   2/2" in out.stdout and (tmp_path / "p.npz").is_file()


def test_a_mesh_epoch_waits_for_step_i_minus_in_flight_before_step_i(monkeypatch):
    # The bound that keeps XLA's CPU client from waiting in its own pool threads (above),
    # checked on the mesh-jit runner itself: which step's loss was waited for, when.
    from funcnet.train import runners

    assert 1 <= runners.IN_FLIGHT < 32  # 32: the client's in-flight programs per device
    events = []

    class Loss(float):
        def block_until_ready(self):
            events.append(("wait", int(self)))
            return self

    def step(params, opt_state, x, t, rng=None):
        i = sum(kind == "step" for kind, _ in events)
        events.append(("step", i))
        return params, opt_state, Loss(i)

    monkeypatch.setattr(parallel, "jit_replicated", lambda fn, mesh, donate=(): fn)
    x, t = np.zeros((40, 3), np.float32), np.zeros(40, np.int32)
    runner = train.make_runner(step, (x, t), 4, 0, on_jax=True, mesh=parallel.data_mesh(1))
    assert runner.mode == "mesh-jit" and runner.steps == 10
    _, _, losses = runner.epoch({}, (), 1)
    assert losses == list(range(10))
    k = runners.IN_FLIGHT
    # Step i is launched once step i - k is done: never more than k steps queued.
    assert [i for kind, i in events if kind == "wait"] == list(range(10 - k))
    for i in range(k, 10):
        assert events.index(("wait", i - k)) < events.index(("step", i)), events


# --------------------------------------------------------------------------- in-process


def test_fit_resumes_with_the_batches_of_the_whole_run(tmp_path):
    net, params = mlp(seed=2)
    x, t = np.random.default_rng(0).random((120, 8), np.float32), np.arange(120) % 3
    opt = optim.adam(0.01)
    kw = dict(batch_size=30, seed=7, optimizer=opt, progress=False)
    saved = []
    whole, _, hist = train.fit(
        net, params, (x, t), epochs=3, **kw,
        checkpoint=lambda e, p, s: saved.append((e, p, s)),
    )  # fmt: skip
    assert [e for e, _, _ in saved] == [1, 2, 3]
    _, p1, s1 = saved[0]
    checkpoints.save_run(tmp_path / "run.npz", p1, s1, 1, {"seed": 7})
    back = checkpoints.load_run(tmp_path / "run.npz", params, opt.init(params))
    assert back.epoch == 1 and back.meta == {"seed": 7}
    seen = []
    resumed, _, rest = train.fit(
        net, back.params, (x, t), epochs=3, resume=back, **kw,
        on_epoch=lambda e, h: seen.append(e),
    )  # fmt: skip
    assert seen == [2, 3] and rest.step_loss == hist.step_loss[4:]
    same(resumed, whole, rtol=0)  # NumPy: bit for bit
    with pytest.raises(ValueError, match=r"resume.epoch must be in \[0, 2\] for epochs=3, got 3"):
        train.fit(net, params, (x, t), epochs=3, resume=train.Resume(3))


def test_run_checkpoints_refuse_what_does_not_fit(tmp_path):
    _, params = mlp()
    opt = optim.sgd(0.1)
    checkpoints.save_params(tmp_path / "p.npz", params)
    with pytest.raises(ValueError, match="is not a run checkpoint save_run wrote"):
        checkpoints.run_info(tmp_path / "p.npz")
    checkpoints.save_run(tmp_path / "r.npz", params, optim.adam(0.1).init(params), 2)
    assert checkpoints.run_info(tmp_path / "r.npz") == (2, {})
    with pytest.raises(ValueError, match=r"does not match the network: missing none, unexpected"):
        checkpoints.load_run(tmp_path / "r.npz", params, opt.init(params))
    with pytest.raises(ValueError, match="epoch must be an int >= 0"):
        checkpoints.save_run(tmp_path / "r.npz", params, (), -1)


def test_a_mesh_must_be_one_data_axis_and_can_be_one_device():
    net, params = mlp()
    x, t = np.random.default_rng(0).random((60, 8), np.float32), np.arange(60) % 3
    with pytest.raises(
        ValueError, match=r"mesh must be a 1-D jax\.sharding\.Mesh, axis 'data'; got str"
    ):
        train.fit(net, params, (x, t), batch_size=20, mesh="cpu")
    with pytest.raises(ValueError, match=r"asked for 5 device\(s\) per process.*devices\(5\)"):
        parallel.data_mesh(5)
    _, _, h1 = train.fit(net, params, (x, t), epochs=1, batch_size=20, progress=False)
    _, _, h2 = train.fit(
        net, params, (x, t), epochs=1, batch_size=20, progress=False, mesh=parallel.data_mesh(1)
    )
    np.testing.assert_allclose(h2.step_loss, h1.step_loss, rtol=1e-4)
    assert parallel.is_main() and parallel.local_rows(parallel.data_mesh(1), 20) == slice(0, 20)


def test_resume_settings_are_checked_before_any_work(tmp_path):
    _, params = mlp()
    meta = {"model": "mlp", "hidden": 100, "optimizer": "sgd", "lr": 0.1, "average": 0.0,
            "batch": 100, "seed": 0, "subset": 0}  # fmt: skip
    checkpoints.save_run(tmp_path / "r.npz", params, (), 3, meta)
    checkpoints.save_params(tmp_path / "p.npz", params)
    cases = [
        ("r.npz", ["--batch", "50"], "it was written with --batch 100, this run has 50"),
        ("r.npz", ["--optimizer", "adam"], "with --optimizer sgd, this run has adam"),
        ("r.npz", ["--epochs", "3"], "3 epochs are done already; ask for more with --epochs"),
        ("p.npz", [], "is not a run checkpoint save_run wrote"),
    ]
    for file, extra, says in cases:
        argv = ["train", "--resume", str(tmp_path / file), "--data-dir", str(tmp_path / "none")]
        out = subprocess.run(
            [*FUNCNET, *argv, *extra], capture_output=True, text=True, timeout=60, env=env(1)
        )
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2 and len(lines) == 1 and says in lines[0], out.stderr


# --------------------------------------------------------------------------- the command


def command_lines(page: Path, start: str) -> list[str]:
    block = re.search(r"```bash\n(.*?)```", page.read_text().split(start, 1)[1], re.S).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def test_cli_devices_4_saves_what_one_device_trains(tmp_path, mnist_dir):
    save, run = tmp_path / "p.npz", tmp_path / "run.npz"
    argv = ["train", "--subset", "600", "--epochs", "1", "--no-plot", "--data-dir", str(mnist_dir)]
    out = subprocess.run(
        [*FUNCNET, *argv, "--devices", "4", "--save", str(save), "--checkpoint", str(run)],
        capture_output=True, text=True, timeout=180, env=env(1),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "backend jax on 4 cpu devices" in out.stdout and "[Gloo]" not in out.stdout
    from funcnet import models
    from funcnet.data import load_mnist

    (x, t), _ = load_mnist(mnist_dir, download=False)
    net = models.two_layer_net(100, 0.01)
    _, params = net.init(0, (-1, 784))
    one, _, _ = train.fit(
        net, train.to_backend(params, "jax"), (x[:600], t[:600]), epochs=1, progress=False
    )
    saved = checkpoints.load_params(save, params)
    same(saved, one, rtol=TOL, atol=1e-7)
    assert checkpoints.run_info(run)[0] == 1


@pytest.mark.slow
def test_the_two_process_command_of_the_docs(tmp_path, mnist_dir):
    """docs/scale.md's two commands as written (a free port, a short run): the same saved
    params as --devices 4, process 0 alone printing and saving."""
    lines = command_lines(ROOT / "docs" / "scale.md", "## Two processes")
    port, short = free_port(), ["--subset", "1000", "--epochs", "2", "--no-plot"]
    argvs = []
    for line in lines:
        line = line.removesuffix("&").strip().replace("127.0.0.1:12345", f"127.0.0.1:{port}")
        argv = shlex.split(line.replace("../shared/mnist", str(mnist_dir)))
        assert argv[0] == "funcnet", line
        argvs.append([*FUNCNET, *argv[1:], *short])
    assert len(argvs) == 2 and all("--coordinator" in a for a in argvs)
    with started(argvs, tmp_path, cwd=tmp_path) as procs:
        wait_all(procs, 300)
    for i, p in enumerate(procs):
        assert p.returncode == 0, (tmp_path / f"{i}.err").read_text()[-3000:]
    outs = [(tmp_path / f"{i}.out").read_text() for i in (0, 1)]
    assert "in 2 processes" in outs[0] and "params saved to" in outs[0] and outs[1] == ""
    four = tmp_path / "four"
    four.mkdir()
    ref = subprocess.run(
        [*FUNCNET, "train", "--devices", "4", "--data-dir", str(mnist_dir), *short, "--save",
         "four.npz"], cwd=four, capture_output=True, text=True, timeout=300, env=env(1),
    )  # fmt: skip
    assert ref.returncode == 0, ref.stderr[-3000:]
    got = np.load(tmp_path / "mlp.npz")
    want = np.load(four / "four.npz")
    for k in want.files:
        np.testing.assert_allclose(got[k], want[k], rtol=TOL, atol=1e-7)


# --------------------------------------------------------------- processes: bad starts

TRAIN = [sys.executable, "-m", "funcnet", "train"]


def _cli(port, pid, *more, timeout=20):
    return [*TRAIN, "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
            "--process-id", str(pid), "--devices", "1", "--peer-timeout", str(timeout),
            "--subset", "200", "--test-subset", "100", "--epochs", "1", "--no-plot",
            *more]  # fmt: skip


def _listening(port: int) -> list[str]:
    """The local addresses listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                local, _, state = line.split()[1:4]
                address, p = local.rsplit(":", 1)
                if int(p, 16) == port and state == "0A":  # LISTEN
                    found.append(address)
    return found


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux's /proc/net/tcp")
def test_the_coordinator_listens_only_on_the_address_given(tmp_path, mnist_dir):
    port = free_port()
    with started([_cli(port, 0, "--data-dir", str(mnist_dir))], tmp_path, devices=1) as procs:
        deadline = time.monotonic() + 60
        while not _listening(port) and time.monotonic() < deadline and procs[0].poll() is None:
            time.sleep(0.2)
        where = _listening(port)
    # 127.0.0.1 in /proc's byte order (or as ::ffff:127.0.0.1 in tcp6); not 0.0.0.0 nor ::,
    # every interface, which is what JAX binds by default.
    loopback = {"0100007F", "0000000000000000FFFF00000100007F"}
    assert where and set(where) <= loopback, (where, (tmp_path / "0.err").read_text()[-2000:])


def test_a_taken_coordinator_port_is_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run(_cli(port, 0), capture_output=True, text=True, timeout=60,
                           env=env(1))  # fmt: skip
    assert r.returncode == 1, r.stderr[-2000:]
    assert r.stderr == (
        f"funcnet train: cannot start the processes: coordinator 127.0.0.1:{port}: process 0 "
        "cannot listen there: in use (another run?); pick another port or host\n"
    )


def _one_line_each(tmp_path, procs, says):
    for i, p in enumerate(procs):
        err = (tmp_path / f"{i}.err").read_text()
        assert p.returncode == 1 and err.count("\n") == 1, err[-2000:]
        assert err.startswith("funcnet train: cannot start the processes: ") and says[i] in err, err


def test_a_peer_that_never_starts_is_one_line_on_either_side(tmp_path):
    # Process 0 alone, and (on another port) process 1 alone: left to JAX's start-up, both
    # would abort with its C++ stack once the timeout had passed.
    argvs = [_cli(free_port(), 0, timeout=3), _cli(free_port(), 1, timeout=3)]
    start = time.monotonic()
    with started(argvs, tmp_path, devices=1) as procs:
        wait_all(procs, 90)
    assert time.monotonic() - start < 60
    _one_line_each(tmp_path, procs, ["process(es) 1 of 2 did not join", "process 0 did not answer"])


@pytest.mark.parametrize("ids", [(0, 1, 1), (0, 0)])
def test_two_processes_with_one_id_are_refused_in_one_line(tmp_path, ids):
    port = free_port()
    more = ["--num-processes", str(len(ids)), "--batch", "60"]
    argvs = [_cli(port, i, *more, timeout=10) for i in ids]
    with started(argvs, tmp_path, devices=1) as procs:
        wait_all(procs, 90)
    if ids == (0, 1, 1):  # process 0 hears both: every process says so
        _one_line_each(tmp_path, procs, ["two processes were started with --process-id 1"] * 3)
        return
    # Two processes 0: one serves the address, the other cannot; the first then waits in
    # vain for process 1.
    errs = sorted((tmp_path / f"{i}.err").read_text() for i in (0, 1))
    assert [p.returncode for p in procs] == [1, 1], errs
    start = "funcnet train: cannot start the processes: "
    assert all(e.count("\n") == 1 and e.startswith(start) for e in errs), errs
    assert "cannot listen there: in use" in errs[0] and "of 2 did not join" in errs[1], errs


@pytest.mark.parametrize(("flag", "values"), [("--seed", ("0", "1")), ("--lr", ("0.1", "0.2")),
                                              ("--epochs", ("1", "2"))])  # fmt: skip
def test_processes_started_with_different_settings_all_stop_in_one_line(
    tmp_path, mnist_dir, flag, values
):
    port = free_port()
    argvs = [_cli(port, i, "--data-dir", str(mnist_dir), flag, v) for i, v in enumerate(values)]
    with started(argvs, tmp_path, devices=1) as procs:
        wait_all(procs, 90)
    name = flag.removeprefix("--")
    for i, p in enumerate(procs):
        err = (tmp_path / f"{i}.err").read_text()
        assert p.returncode == 1, err[-2000:]
        line = [x for x in err.splitlines() if x.startswith("funcnet train:")]
        assert len(line) == 1 and "Traceback" not in err, err[-2000:]
        assert line[0].startswith(
            "funcnet train: cannot start the processes: the processes were started with "
            f"different settings: {name} "
        ), line[0]


def test_sigterm_ends_every_process_of_a_run_in_one_line_each(tmp_path, mnist_dir):
    # What SLURM and Kubernetes do at the end of a job: SIGTERM to every process.
    port = free_port()
    save = tmp_path / "m.npz"
    more = ["--data-dir", str(mnist_dir), "--subset", "2000", "--epochs", "100000",
            "--save", str(save)]  # fmt: skip
    argvs = [_cli(port, i, *more, timeout=30) for i in (0, 1)]  # the last of a flag counts
    with started(argvs, tmp_path, devices=1) as procs:
        _wait_for("epoch   2/", tmp_path, procs, 120)
        for p in procs:
            p.send_signal(signal.SIGTERM)
        wait_all(procs, 30)
    for i, p in enumerate(procs):
        # Whichever process handles it first leaves the step's collective, which fails in
        # the other: that is its interrupt too (it got the signal), never exit status 1;
        # and process 0 outlives the others, whose JAX error poller would abort them.
        err = (tmp_path / f"{i}.err").read_text()
        lines = [x for x in err.splitlines() if not x.startswith("[Gloo]")]
        assert p.returncode == 143, err[-2000:]
        assert len(lines) == 1 and lines[0].startswith("funcnet train: interrupted"), err[-2000:]
    said = (tmp_path / "0.err").read_text()
    assert "are saved to" not in said or save.is_file(), said


@pytest.mark.parametrize(("who", "how"), [(1, "SIGSTOP"), (1, "SIGKILL"), (0, "SIGKILL")])
def test_a_stopped_or_dead_peer_ends_the_survivor_in_one_line(tmp_path, mnist_dir, who, how):
    port = free_port()
    run = tmp_path / "run.npz"
    more = ["--data-dir", str(mnist_dir), "--subset", "2000", "--epochs", "100000",
            "--checkpoint", str(run)]  # fmt: skip
    argvs = [_cli(port, i, *more, timeout=10) for i in (0, 1)]
    survivor = 1 - who
    with started(argvs, tmp_path, devices=1) as procs:
        _wait_for("epoch   2/", tmp_path, procs, 120)
        procs[who].send_signal(getattr(signal, how))
        start = time.monotonic()
        procs[survivor].wait(timeout=60)
        took = time.monotonic() - start
    err = (tmp_path / f"{survivor}.err").read_text()
    lines = [x for x in err.splitlines() if not x.startswith("[Gloo]")]
    assert procs[survivor].returncode != 0 and took < 15, (took, err[-2000:])
    assert checkpoints.run_info(run)[0] >= 2
    # A killed process 0 too: the coordination service runs in a process of its own, so
    # JAX's error poller in the survivor does not abort it (C++ stack, status 134).
    assert procs[survivor].returncode == 1, err[-2000:]
    assert len(lines) == 1 and lines[0].startswith("funcnet train: "), err[-2000:]
    assert lines[0].endswith("finished checkpoints are on disk")
