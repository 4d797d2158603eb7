"""The runs of tests/test_scale.py, each in a fresh interpreter (a helper, not a test file).

    python tests/scale_runs.py JOB [ARGS]

The host device count is fixed when JAX starts, so each job runs in its own process, with
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` set by the test.  A job prints one
JSON line last; the test asserts on it.  Jobs:

equal KIND        KIND "step" or "scan": SGD and Adam runs with BatchNorm and Dropout on 2
                  or 4 devices against the 1-device run, autodiff switched off throughout.
collectives       the compiled step's all-reduces, BatchNorm's sharded backward against
                  jax.vjp, Dropout's masks against the unsharded ones.
process I PORT D  process I of 2 (2 devices each): a per-step run (BatchNorm, Dropout) with
                  a run checkpoint per epoch written by process 0 only, a scanned run of a
                  plain MLP; final params in D; the Python threads left at exit on stderr.
reference D       one process, 4 devices: the same runs, and resumes from D's epoch-1
                  checkpoint on 1, 2 and 4 devices.
spin I PORT       process I of 2 training until killed (peer timeout 10 s).
done_early I PORT HOW
                  process I of 2 (peer timeout 6 s): process 1 dies or stays at work,
                  process 0 comes to its exit.
flood STEPS K D   one per-step epoch of STEPS heavy steps on D devices, at most K steps
                  queued (``runners.IN_FLIGHT``; 0: unbounded, what XLA deadlocked on).
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import sys
import threading
import time

import jax
import numpy as np
from nets import blobs

import funcnet as fn
from funcnet import checkpoints, optim, parallel, train

EPOCHS, BATCH = 2, 40


# BatchNorm after the ReLU: a bias straight before BatchNorm has a zero gradient, which Adam
# would turn into ±lr steps of rounding noise on any backend.  One net for every run, so that
# fit's jitted evaluation forward is compiled once.
NET = fn.pipeline(
    fn.Dense(32, W_init="he"), fn.Relu(), fn.BatchNorm(), fn.Dropout(0.3), fn.Dense(3)
)


# Without them, where a run checks the plumbing only: its step compiles in half the time.
PLAIN = fn.pipeline(fn.Dense(16), fn.Relu(), fn.Dense(3))


def net_and_params(net=NET):
    return net, net.init(0, (-1, 8))[1]


def optimizer(name):
    return optim.sgd(0.1) if name == "sgd" else optim.adam(0.01)


def run(opt_name, scan, devices=None, params=None, net=NET, **kw):
    """``fit`` on the blobs: on one device without a mesh, else on ``devices`` per process."""
    net, fresh = net_and_params(net)
    params = fresh if params is None else params
    x, t = blobs(240, seed=4)
    mesh = None if devices is None else parallel.data_mesh(devices)
    params = jax.device_put(params) if mesh is None else params
    kw = {"epochs": EPOCHS, "batch_size": BATCH, **kw}
    p, _, h = train.fit(
        net, params, (x, t), optimizer=optimizer(opt_name), scan=scan,
        mesh=mesh, progress=False, **kw,
    )  # fmt: skip
    return parallel.local_copy(p), h


def rel_diff(a, b) -> float:
    """max over leaves of max|a − b| / max|b|: float32 reduction order gives ~1e-6."""
    pairs = zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    return max(
        float(np.max(np.abs(np.asarray(x) - np.asarray(y))) / max(np.max(np.abs(y)), 1e-6))
        for x, y in pairs
    )


def no_autodiff():
    """Make JAX's reverse and forward mode raise: the steps must not need them."""
    from jax._src.interpreters import ad

    def refuse(*args, **kwargs):
        raise AssertionError("JAX autodiff ran")

    ad.backward_pass = ad.backward_pass3 = refuse
    ad.JVPTrace.process_primitive = refuse
    try:
        jax.grad(lambda v: (v * v).sum())(np.ones(2, np.float32))
    except AssertionError:
        return True
    return False


def equal(kind):
    """Per step: SGD on 2 devices, Adam on 4; scan: the other way round.  Each pair of the
    three choices is covered, at half the compilations of all eight."""
    scan = kind == "scan"
    out = {"autodiff_off": no_autodiff()}
    for name, n in [("sgd", 4), ("adam", 2)] if scan else [("sgd", 2), ("adam", 4)]:
        ref, hist = run(name, scan)
        p, h = run(name, scan, n)
        loss = float(np.max(np.abs(np.subtract(h.step_loss, hist.step_loss))))
        out[f"{name}-{n}"] = {"params": rel_diff(p, ref), "loss": loss}
    try:
        run("sgd", scan, 4, epochs=1, batch_size=30)
    except ValueError as e:
        out["indivisible"] = str(e)
    return out


def collectives():
    out = {"threefry_partitionable": bool(jax.config.jax_threefry_partitionable)}
    mesh = parallel.data_mesh(4)
    # The MLP's step: one all-reduce of the gradients (plus the loss and its row gather).
    net = fn.pipeline(fn.Dense(100), fn.Relu(), fn.Dense(10))
    _, params = net.init(0, (-1, 784))
    opt = optim.sgd(0.1)
    p, s = parallel.replicate((params, opt.init(fn.trainable(params))), mesh)
    x = parallel.place(np.zeros((100, 784), np.float32), mesh, 100)
    t = parallel.place(np.zeros(100, np.int32), mesh, 100)
    step = train.make_step(net, fn.softmax_cross_entropy, opt)
    text = parallel.jit_replicated(step, mesh).lower(p, s, x, t).compile().as_text()
    reduced = parallel.all_reduces(text)
    out["mlp_step"] = reduced.ops, reduced.elements
    xs, ts = (parallel.place(np.zeros((3, *a.shape), a.dtype), mesh, 100, 1) for a in (x, t))
    text = parallel.jit_replicated(train.make_epoch(step), mesh).lower(p, s, xs, ts).compile()
    reduced = parallel.all_reduces(text.as_text())
    out["mlp_scan"] = reduced.ops, reduced.elements
    out["gradient_elements"] = sum(a.size for a in jax.tree_util.tree_leaves(params))

    # BatchNorm, sharded: the hand-written backward against jax.vjp of the same forward,
    # and both against one device (global statistics: SyncBatchNorm).
    jax.config.update("jax_enable_x64", True)
    bn = fn.BatchNorm()
    rng = np.random.default_rng(0)
    for shape in ((16, 5), (8, 3, 4, 4)):
        _, bp = bn.init(0, (-1, *shape[1:]), dtype=np.float64)
        bp = {**bp, "gamma": rng.standard_normal(shape[1]), "beta": rng.standard_normal(shape[1])}
        xv, g = rng.standard_normal(shape) * 3 + 1, rng.standard_normal(shape)

        def hand(bp, xv, g):
            out, cache = bn.forward(bp, xv, train=True)
            return out, bn.backward(cache, g)

        def auto(bp, xv, g):
            def f(w, xv):
                return bn.forward(fn.with_trainable(bp, w), xv, train=True)[0]

            out, vjp = jax.vjp(f, fn.trainable(bp), xv)
            return out, vjp(g)

        rep, sh = parallel.replicate(bp, mesh), [parallel.place(a, mesh, shape[0]) for a in (xv, g)]
        h = jax.jit(hand)(rep, *sh)
        a = jax.jit(auto)(rep, *sh)
        one = jax.jit(hand)(jax.device_put(bp, jax.devices()[0]), xv, g)
        out[f"bn{len(shape)}d_vs_vjp"] = rel_diff(h, a)
        out[f"bn{len(shape)}d_vs_one_device"] = rel_diff(h, one)
        # Per-device statistics would be another function: check that it is not that one.
        local = bn.forward(bp, xv[: shape[0] // 4], train=True)[0]
        out[f"bn{len(shape)}d_local_stats_differ"] = float(
            np.max(np.abs(np.asarray(h[0])[: shape[0] // 4] - local))
        )
    jax.config.update("jax_enable_x64", False)

    # Dropout: a global-shape jax.random draw gives the same bits whatever the sharding.
    drop = fn.Dropout(0.5)
    key = jax.random.PRNGKey(3)
    xv = np.ones((16, 6), np.float32)
    sharded = jax.jit(lambda a, k: drop.forward((), a, train=True, rng=k)[0])(
        parallel.place(xv, mesh, 16), key
    )
    single = drop.forward((), jax.device_put(xv, jax.devices()[0]), train=True, rng=key)[0]
    out["dropout_same_mask"] = bool(np.array_equal(np.asarray(sharded), np.asarray(single)))
    return out


def save_each_epoch(folder):
    def checkpoint(epoch, params, opt_state):
        if parallel.is_main():
            checkpoints.save_run(os.path.join(folder, f"run-{epoch}.npz"), params, opt_state, epoch)
            print(f"process {jax.process_index()} wrote run-{epoch}.npz", flush=True)

    return checkpoint


def threads_left_at_exit():
    """At exit, after funcnet's own exit work (registered before it, so run after it): the
    Python threads still running, which the interpreter's finalization would end."""
    alive = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    print(f"threads at exit: {sorted(alive)}", file=sys.stderr, flush=True)


def process(pid, port, folder):
    atexit.register(threads_left_at_exit)
    parallel.initialize(f"127.0.0.1:{port}", 2, int(pid), timeout=30)
    out = {"devices": len(jax.devices()), "local": len(jax.local_devices())}
    step, _ = run("adam", False, 2, checkpoint=save_each_epoch(folder))
    scanned, _ = run("sgd", True, 2, net=PLAIN)
    if parallel.is_main():
        checkpoints.save_params(os.path.join(folder, "step.npz"), step)
        checkpoints.save_params(os.path.join(folder, "scan.npz"), scanned)
    return out


def reference(folder):
    out = {}
    _, like = net_and_params()
    full, _ = run("adam", False, 4)
    out["process_step"] = rel_diff(checkpoints.load_params(f"{folder}/step.npz", like), full)
    scanned, _ = run("sgd", True, 4, net=PLAIN)
    plain = net_and_params(PLAIN)[1]
    out["process_scan"] = rel_diff(checkpoints.load_params(f"{folder}/scan.npz", plain), scanned)
    saved = checkpoints.load_run(
        f"{folder}/run-1.npz", like, optimizer("adam").init(fn.trainable(like))
    )
    out["saved_epoch"] = saved.epoch
    for n in (1, 2, 4):
        p, _ = run("adam", False, n, saved.params, resume=saved)
        out[f"resume-{n}"] = rel_diff(p, full)
    return out


def spin(pid, port):
    parallel.initialize(f"127.0.0.1:{port}", 2, int(pid), timeout=10)

    def say(epoch, hist):
        print(f"epoch {epoch}", flush=True)  # a file, read while the process runs

    run("sgd", False, 2, net=PLAIN, epochs=100000, on_epoch=say)


def done_early(pid, port, how):
    """Process 1 dies at once (``how="dies"``) or stays at work for a minute (``"lingers"``);
    process 0 does its work and comes to its exit, where JAX's shutdown barrier would wait
    for process 1 and then abort."""
    parallel.initialize(f"127.0.0.1:{port}", 2, int(pid), timeout=6)
    if int(pid) == 1:
        if how == "dies":
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)
    time.sleep(1)
    return {"done": True}


def flood(steps, in_flight, devices="4"):
    """Steps heavy enough (a batch of 400 through a 64-400-10 MLP) that launching them runs
    ahead of computing them on the shared cores, which the test keeps busy too."""
    from funcnet.train import runners

    runners.IN_FLIGHT = int(in_flight)
    net = fn.pipeline(fn.Dense(400), fn.Relu(), fn.Dense(10))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((int(steps) * 400, 64), np.float32)
    t = rng.integers(0, 10, len(x))
    _, params = net.init(0, (-1, 64))
    _, _, hist = train.fit(
        net, params, (x, t), epochs=1, batch_size=400, optimizer=optim.sgd(0.01),
        mesh=parallel.data_mesh(int(devices)), progress=False,
    )  # fmt: skip
    return {"steps": len(hist.step_loss), "finite": bool(np.isfinite(hist.step_loss).all())}


if __name__ == "__main__":
    job, *args = sys.argv[1:]
    result = {"equal": equal, "collectives": collectives, "process": process,
              "reference": reference, "spin": spin, "flood": flood,
              "done_early": done_early}[job](*args)  # fmt: skip
    print(json.dumps(result))
