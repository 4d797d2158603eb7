"""Scale-out: meshes, shardings, placing batches, and JAX's distributed start-up.

The step does not change.  A 1-D mesh of devices with the axis ``"data"``; every batch
split along its batch axis (``P("data")``); params and optimizer state replicated (``P()``).
``jit`` propagates these shardings through the hand-written forward and backward, and XLA
makes every sum over the batch (xᵀ·dout, Σ dout, the loss's mean, BatchNorm's μ and σ²) a
local sum plus one all-reduce over the devices: the N-device step computes the numbers of
the 1-device step on the same global batch, up to the order of float32 additions.  Several
processes (hosts) run the same program; each one places only its own rows of every batch.
``docs/scale.md`` has the maths, the costs and the commands.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import json
import math
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from . import _terminate

AXIS = "data"  # the one mesh axis: batches are split along it


def use_cpu_devices(n: int) -> None:
    """Give JAX's CPU backend ``n`` devices (``jax_num_cpu_devices``), so that one machine
    without an accelerator can run an ``n``-device mesh.  It must come before JAX's first
    computation; later it only checks that the CPU backend already has ``n`` devices."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"use_cpu_devices: n must be an int >= 1, got {n!r}")
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError:  # the backends have started: the count is fixed now
        have = len(jax.devices("cpu"))
        if have != n:
            raise RuntimeError(
                f"use_cpu_devices: JAX has already started with {have} CPU device(s), not {n}; "
                "call it before any JAX computation"
            ) from None


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    timeout: int = 120,
    name: str = "funcnet",
) -> None:
    """Join this process to a multi-process JAX run (``jax.distributed.initialize``).

    ``coordinator`` is ``"host:port"`` of process 0, which serves it there and only there
    (``127.0.0.1:P`` listens on the loopback alone, not on every interface as JAX's default
    ``[::]:P`` would); with all three left ``None`` JAX reads the cluster's environment
    (SLURM, Open MPI, ...).  CPU collectives go through gloo, so CPU-only hosts can run it.
    ``timeout`` (seconds) bounds the wait for peers to join and at shutdown; a silent peer
    ends the others after half of it (funcnet's watch), JAX's own heartbeat check after
    twice it, a fallback for a watch that cannot run.  JAX's preemption service is left off:
    it takes SIGTERM for itself, and a run must end on SIGTERM as on Ctrl-C.  Before JAX
    starts, the processes answer a roll call on the coordinator's address
    (:func:`_roll_call`): a port already in use on process 0's machine, a peer that does not
    start within the timeout, two processes with one id or different process counts are a
    ValueError in every process concerned, where JAX's own start-up would abort them with a
    C++ stack.  Process 0 serves the run's coordination service from a child process that
    outlives it (:class:`_Service`).  A peer that dies (process 0 included), is stopped or
    hangs ends this process within about half the timeout, with one line on stderr that
    ``name`` starts (:class:`_Watcher`); so does an exception that gloo throws in a
    thread of its own when a peer dies mid-collective (``funcnet._terminate``), which
    would abort the process.  Call it before any computation.
    """
    if not isinstance(timeout, int) or timeout < 1:
        raise ValueError(f"initialize: timeout must be an int >= 1 second, got {timeout!r}")
    bind = coordinator
    if None not in (coordinator, num_processes, process_id):
        _roll_call(coordinator, num_processes, process_id, timeout)
        if process_id == 0 and num_processes > 1:
            _service.start(coordinator, num_processes, timeout)
            # JAX starts a service in process 0 whatever it is told: this one, on a free
            # port of the same host, serves nobody.
            bind = f"{coordinator.rpartition(':')[0]}:0"
    elif coordinator is not None and process_id == 0:
        _listen(coordinator).close()  # at least a port in use is one line
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.config.update("jax_enable_preemption_service", False)
    jax.distributed.initialize(
        coordinator_address=coordinator,
        num_processes=num_processes,
        process_id=process_id,
        initialization_timeout=timeout,
        heartbeat_timeout_seconds=_HEARTBEAT * timeout,
        shutdown_timeout_seconds=timeout,
        coordinator_bind_address=bind,
    )
    _connect(data_mesh())
    if jax.process_count() > 1:
        # atexit runs last-registered first: this before JAX's shutdown, whose barrier
        # waits for the peers still finishing their own last work.
        atexit.register(_finish)
        _watcher.start(timeout, name)
        _terminate.install(name, "a peer process gone?")


_exiting = threading.Event()  # this process is past its work: peers are no longer judged

# JAX's heartbeat timeout, in peer timeouts.  Its check aborts every survivor with a C++
# stack, and it can fire well before its timeout once a peer stops (that peer's last
# heartbeat may be old by then), so it must stay far behind the watch's one line at half
# the timeout, even on a loaded machine: a fallback for a watch that cannot run.
_HEARTBEAT = 2


class _Service:
    """The run's coordination service in a process of its own, which process 0 starts and
    which outlives it: JAX's error poller in every other process aborts that process (a
    C++ stack, status 134) the moment the service's connection closes, so a service inside
    process 0 turned a killed process 0 into an abort of all the others.  Served from here,
    the others see their collective fail or process 0 fall silent and end in one line.  It
    stops when process 0 says it is done (after JAX's shutdown), or ``timeout`` seconds
    after process 0 has gone otherwise (what the others need to notice and leave)."""

    CODE = (
        "import signal, sys, time\n"
        "for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):\n"
        "    signal.signal(s, signal.SIG_IGN)\n"
        "from jaxlib import _jax\n"
        "address, n, timeout, beat = sys.argv[1], *map(int, sys.argv[2:5])\n"
        "service = _jax.get_distributed_runtime_service(address, n, heartbeat_timeout=beat,"
        " shutdown_timeout=timeout)\n"
        "print('ready', flush=True)\n"
        "if sys.stdin.readline().strip() != 'done':\n"
        "    time.sleep(timeout)\n"
        "service.shutdown()\n"
    )

    def __init__(self):
        self.proc = None

    def start(self, coordinator: str, n: int, timeout: int) -> None:
        import subprocess

        # Its own session: a Ctrl-C or a signal to the terminal's process group is for
        # the run's processes, which need the service while they leave.
        self.proc = subprocess.Popen(
            [sys.executable, "-c", self.CODE, coordinator, str(n), str(timeout),
             str(_HEARTBEAT * timeout)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, start_new_session=True,
        )  # fmt: skip
        if self.proc.stdout.readline().strip() != "ready":
            self.proc.kill()
            raise ValueError(f"coordinator {coordinator}: the coordination service did not start")

    def done(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(OSError, ValueError):
                self.proc.stdin.write("done\n")
                self.proc.stdin.flush()
            self.proc = None


_service = _Service()


class _Watcher:
    """The peer watch: every process counts up a key of its own in the coordination
    service, from a thread of its own (which runs while the main thread waits in C++), and
    watches the others' keys.  A peer whose count has not moved for half the timeout is
    dead, stopped (SIGSTOP) or hung: one line on stderr and exit status 1, before JAX's own
    heartbeat timeout ends the process with a C++ abort and its stack.  A coordinator that
    is gone is the same.  The thread must end before the interpreter does: a daemon thread
    that comes back from C++ (a call to the coordination service) while the interpreter
    finalizes is ended by ``pthread_exit``, whose unwinding through the C++ frames aborts
    the whole process ("terminate called after throwing an instance of ''")."""

    def __init__(self):
        self.thread, self.stop = None, threading.Event()
        self.timeout, self.name = 120, "funcnet"
        self.seen: dict[int, tuple] = {}  # peer: (its last count, when it last moved)

    def start(self, timeout: int, name: str) -> None:
        self.stop.clear()
        self.timeout, self.name = timeout, name
        now = time.monotonic()
        self.seen = {p: (None, now) for p in range(jax.process_count())
                     if p != jax.process_index()}  # fmt: skip
        self.thread = threading.Thread(target=self._run, daemon=True, name="peers")
        self.thread.start()

    def silent(self) -> list[int]:
        """The peers whose count has not moved for half the timeout: dead, stopped, hung."""
        now = time.monotonic()
        return [p for p, (_, since) in self.seen.items() if now - since > self.timeout / 2]

    def end(self, wait: float = 10.0) -> None:
        self.stop.set()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(wait)  # at most one call to the service, which has timeouts
        self.thread = None

    def _run(self) -> None:
        from jax._src import distributed

        client, me = distributed.global_state.client, jax.process_index()
        while not self.stop.is_set():
            try:
                client.key_value_increment(f"funcnet/alive/{me}", 1)
                for p, (last, _) in list(self.seen.items()):
                    try:
                        value = client.key_value_try_get(f"funcnet/alive/{p}")
                    except Exception:  # not there yet: it has not counted once
                        value = None
                    if value != last:
                        self.seen[p] = (value, time.monotonic())
                silent = self.silent()
                if silent and not _ending():  # ending: still counting, judging none
                    since = time.monotonic() - self.seen[silent[0]][1]
                    _lost(f"process {silent[0]} has not answered for {since:.0f} s (dead, "
                          "stopped or hung)")  # fmt: skip
            except Exception as e:  # the coordination service itself is gone
                if not _ending():
                    _lost(f"the coordinator (process 0) does not answer ({_one_line(e)})")
            self.stop.wait(max(0.2, self.timeout / 20))


_watcher = _Watcher()


def _finish() -> None:
    """At exit, before JAX's own clean-up.  First every peer must come to its own exit
    (the watcher still counts meanwhile: a peer still at work must not take this process
    for dead): JAX's shutdown barrier, with a peer that died, ends in a C++ abort once its
    timeout has passed, so a silent peer ends this process here, in one line and status 1.
    Then JAX's shutdown, the watcher's end, C++'s own terminate handler back (ours runs
    Python, which the finalizing interpreter no longer allows), and the service's end."""
    _exiting.set()
    why = _peers_not_at_exit()
    if why:
        _lost(why, "this process ends without waiting for it")
    with contextlib.suppress(Exception):
        jax.distributed.shutdown()
    _watcher.end()
    _terminate.restore()
    _service.done()


def _peers_not_at_exit() -> str:
    """Says this process is at its exit, and waits until every peer says so too: "" then,
    else why not.  A peer that falls silent first (:meth:`_Watcher.silent`) ends the wait,
    and so does the peer timeout: a peer that waits in a collective for this process,
    which has left its work early, would otherwise keep both waiting."""
    from jax._src import distributed

    client, me = distributed.global_state.client, jax.process_index()
    try:
        client.key_value_set(f"funcnet/exit/{me}", "1")
    except Exception as e:  # the coordination service is gone: so is every barrier
        return f"the coordinator does not answer ({_one_line(e)})"
    waiting, deadline = set(_watcher.seen), time.monotonic() + _watcher.timeout
    while True:
        for p in sorted(waiting):
            with contextlib.suppress(Exception):  # not there yet
                client.key_value_try_get(f"funcnet/exit/{p}")
                waiting.discard(p)
        if not waiting:
            return ""
        silent = [p for p in _watcher.silent() if p in waiting]
        if silent:
            return f"process {silent[0]} did not come to the end of the run (dead, stopped or hung)"
        if time.monotonic() > deadline:
            return (f"process {min(waiting)} did not come to the end of the run within "
                    f"{_watcher.timeout} s (still at work, or waiting for this one?)")  # fmt: skip
        time.sleep(0.1)


def _ending() -> bool:
    """Past its work, or ending on a signal (SIGTERM to every process: the peers leave the
    run at about the same moment, and the run's own interrupt says so in one line)."""
    from . import _signals

    return _exiting.is_set() or _signals.arrived() is not None


def leave(wait: float = 5.0) -> None:
    """Say that this process leaves the run now, before it ends without JAX's shutdown (an
    interrupt, a failed collective).  Process 0 then waits up to ``wait`` seconds for every
    other process to say so too, and one second more: its coordination service must
    outlive them, or JAX's error poller in a peer still finishing its own interrupt aborts
    that peer with a C++ stack.  Nothing to do in a run of one process."""
    if jax.process_count() == 1:
        return
    from jax._src import distributed

    client, me = distributed.global_state.client, jax.process_index()
    _exiting.set()
    with contextlib.suppress(Exception):
        client.key_value_set(f"funcnet/left/{me}", "1")
    if me != 0:
        return
    deadline = time.monotonic() + wait
    for p in range(1, jax.process_count()):
        left_ms = int(max(0.0, deadline - time.monotonic()) * 1000)
        with contextlib.suppress(Exception):  # gone already, or not in time: stop waiting
            client.blocking_key_value_get(f"funcnet/left/{p}", max(left_ms, 1))
    if wait > 0:  # a peer ends right after its key: let it be gone, not only leaving
        time.sleep(1.0)
        _service.done()


def _lost(why: str, then: str = "this process stops too; finished checkpoints are on disk"):
    """One line on stderr, named as :func:`initialize` was told, and exit status 1 at once:
    no clean-up that could wait for a peer that is gone."""
    print(f"{_watcher.name}: {why}; {then}", file=sys.stderr, flush=True)
    os._exit(1)


def _listen(coordinator: str) -> socket.socket:
    """A listening socket on ``coordinator``, or a ValueError naming the address when
    process 0 cannot serve there: JAX's own bind failure is a crash of the whole process."""
    host, _, port = coordinator.rpartition(":")
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except (OSError, ValueError) as e:
        raise ValueError(f"coordinator {coordinator}: cannot resolve {host} ({e})") from None
    family, kind, proto, _, address = infos[0]
    s = socket.socket(family, kind, proto)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(address)
        s.listen(64)
    except OSError as e:
        s.close()
        why = "in use (another run?)" if e.errno == errno.EADDRINUSE else e.strerror
        raise ValueError(
            f"coordinator {coordinator}: process 0 cannot listen there: {why}; "
            "pick another port or host"
        ) from None
    return s


def _roll_call(coordinator: str, n: int, me: int, timeout: int) -> None:
    """Every process of the run checks in with process 0 on ``coordinator`` (plain TCP, one
    line each way) before JAX starts, so that what JAX's start-up would end in a C++ abort
    (a peer that never starts, two processes with one id, different process counts) is a
    ValueError in every process concerned, within about ``timeout`` seconds.  Process 0
    says "go" once all n - 1 others are there, or why not; JAX then serves on the same
    port.  It is no security: anyone who can reach the address can join the run."""
    if me == 0:
        _call_roll(_listen(coordinator), coordinator, n, timeout)
    else:
        _answer_roll(coordinator, n, me, timeout)


def _call_roll(listener: socket.socket, coordinator: str, n: int, timeout: int) -> None:
    deadline, joined, heard = time.monotonic() + timeout, {}, []
    try:
        while len(joined) < n - 1:
            left = deadline - time.monotonic()
            if left <= 0:
                missing = ", ".join(str(p) for p in range(1, n) if p not in joined)
                raise ValueError(
                    f"process(es) {missing} of {n} did not join {coordinator} within "
                    f"{timeout} s (not started, or started with another --coordinator?)"
                )
            listener.settimeout(min(left, 0.5))
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            words = (_read_line(conn, time.monotonic() + 5) or "").split()
            if len(words) != 3 or words[0] != "funcnet" or not all(w.isdigit() for w in words[1:]):
                conn.close()  # not a funcnet process: not part of the run
                continue
            heard.append(conn)
            pid, count = int(words[1]), int(words[2])
            if count != n:
                raise ValueError(
                    f"process {pid} was started with --num-processes {count}, process 0 with {n}"
                )
            if pid in joined or pid == 0:
                raise ValueError(f"two processes were started with --process-id {pid}")
            if pid >= n:
                raise ValueError(f"process id {pid} is not below the {n} processes of the run")
            joined[pid] = conn
        _say(heard, "go")
        for conn in heard:  # the peers close first: the port stays free for JAX
            _read_line(conn, time.monotonic() + 5)
    except ValueError as e:
        _say(heard, f"refused {e}")
        raise
    finally:
        for conn in heard:
            conn.close()
        listener.close()


def _answer_roll(coordinator: str, n: int, me: int, timeout: int) -> None:
    host, _, port = coordinator.rpartition(":")
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = socket.create_connection((host.strip("[]"), int(port)), timeout=2)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise ValueError(
                    f"process 0 did not answer on {coordinator} within {timeout} s (not "
                    "started, or started with another --coordinator?)"
                ) from None
            time.sleep(0.2)
    with conn:
        conn.sendall(f"funcnet {me} {n}\n".encode())
        # Process 0 answers within its own timeout, which may have begun after this one.
        reply = _read_line(conn, time.monotonic() + timeout + 5) or ""
    if reply.startswith("refused "):
        raise ValueError(reply.removeprefix("refused "))
    if reply != "go":
        raise ValueError(
            f"process 0 on {coordinator} did not let this process join within {timeout} s "
            f"(did the run start without it, with another process as --process-id {me}?)"
        )


def _read_line(conn: socket.socket, deadline: float) -> str | None:
    """One line from ``conn`` by ``deadline``; None at end of file, on timeout or error."""
    data = b""
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        try:
            conn.settimeout(left)
            chunk = conn.recv(1024)
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk
    return data.decode(errors="replace").strip()


def _say(conns, line: str) -> None:
    for conn in conns:
        with contextlib.suppress(OSError):
            conn.sendall(f"{line}\n".encode())


def check_same_settings(settings: dict, timeout: int = 120) -> None:
    """Every process of the run compares its ``settings`` (a JSON-able dict: seed, learning
    rate, model, ...) with every other's, through the coordination service; a difference
    is a ValueError in every process, naming the setting and the processes, before any
    work.  Without it a run whose processes differ in ``--seed`` or ``--lr`` would train,
    silently, a model none of them asked for (and other differences abort in XLA)."""
    if jax.process_count() == 1:
        return
    from jax._src import distributed

    client, me = distributed.global_state.client, jax.process_index()
    mine = json.dumps(settings, sort_keys=True)
    client.key_value_set(f"funcnet/settings/{me}", mine)
    for other in range(jax.process_count()):
        if other == me:
            continue
        try:
            theirs = client.blocking_key_value_get(f"funcnet/settings/{other}", timeout * 1000)
        except Exception as e:  # XlaRuntimeError: the peer never said
            raise ValueError(
                f"process {other} did not send its settings within {timeout} s ({_one_line(e)})"
            ) from None
        diff = _differences(settings, json.loads(theirs))
        if diff:
            raise ValueError(
                f"the processes were started with different settings: {diff} "
                f"(process {me} against process {other}); start every process with the same"
            )


def _differences(mine: dict, theirs: dict) -> str:
    keys = sorted(set(mine) | set(theirs))
    return ", ".join(
        f"{k} {mine.get(k)!r} here, {theirs.get(k)!r} there"
        for k in keys
        if mine.get(k) != theirs.get(k)
    )


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _connect(mesh: Mesh) -> None:
    """One tiny all-reduce over ``mesh``, with the C++ side's stdout sent to stderr: gloo
    prints a line per device when it first connects them, and stdout is the run's output."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        ones = place(np.ones(mesh.size, np.float32)[local_rows(mesh, mesh.size)], mesh, mesh.size)
        jax.block_until_ready(jax.jit(lambda a: a.sum(), out_shardings=replicated(mesh))(ones))
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def is_main() -> bool:
    """True in process 0 (and in a run of one process): the one that prints and saves."""
    return jax.process_index() == 0


def data_mesh(devices: int | Sequence | None = None) -> Mesh:
    """A 1-D mesh with the axis ``"data"``.

    ``devices``: ``None``, every device of every process; an int n, the first n devices of
    each process (on one host: n devices); a sequence, those devices in that order.  Each
    process's devices are adjacent, so each one holds one contiguous block of a batch.
    """
    if devices is None:
        chosen = jax.devices()
    elif isinstance(devices, int) and not isinstance(devices, bool):
        local = jax.local_devices()
        if not 1 <= devices <= len(local):
            kind = local[0].platform if local else "no"
            hint = (
                f"; on the CPU call funcnet.parallel.use_cpu_devices({devices}) (or set XLA_FLAGS="
                f"--xla_force_host_platform_device_count={devices}) before JAX starts"
                if devices > len(local)
                else ""
            )
            raise ValueError(
                f"data_mesh: asked for {devices} device(s) per process, this process has "
                f"{len(local)} {kind} device(s){hint}"
            )
        chosen = [
            d
            for p in range(jax.process_count())
            for d in [d for d in jax.devices() if d.process_index == p][:devices]
        ]
    else:
        chosen = list(devices)
    return Mesh(np.array(chosen), (AXIS,))


def check_mesh(mesh, batch_size: int, where: str = "fit") -> None:
    """A 1-D ``"data"`` mesh whose device count divides ``batch_size``, or a ValueError."""
    if not isinstance(mesh, Mesh) or tuple(mesh.axis_names) != (AXIS,):
        got = mesh.axis_names if isinstance(mesh, Mesh) else type(mesh).__name__
        raise ValueError(f"{where}: mesh must be a 1-D jax.sharding.Mesh, axis {AXIS!r}; got {got}")
    if batch_size % mesh.size:
        raise ValueError(
            f"{where}: batch_size {batch_size} does not split evenly over {mesh.size} devices "
            f"(it must be a multiple of {mesh.size})"
        )


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array: params and optimizer state."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, axis: int = 0) -> NamedSharding:
    """Split along ``axis`` (the batch axis) over the mesh's devices, the rest whole."""
    return NamedSharding(mesh, P(*([None] * axis), AXIS))


def replicate(tree, mesh: Mesh):
    """``tree``'s leaves (NumPy or JAX, every process the same values) as arrays replicated
    over ``mesh``; each process fills only its own devices."""
    sharding = replicated(mesh)

    def put(leaf):
        a = np.asarray(leaf)
        return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])

    return jax.tree_util.tree_map(put, tree)


def local_rows(mesh: Mesh, size: int) -> slice:
    """The rows of a batch of ``size`` that this process's devices hold, as one slice."""
    index = batch_sharding(mesh).addressable_devices_indices_map((size,))
    spans = sorted(s[0].indices(size)[:2] for s in index.values())
    lo, hi = spans[0][0], spans[-1][1]
    if sum(b - a for a, b in spans) != hi - lo:
        raise ValueError(
            f"local_rows: process {jax.process_index()}'s devices do not hold one contiguous "
            "block of the batch; build the mesh with funcnet.parallel.data_mesh"
        )
    return slice(lo, hi)


def place(local, mesh: Mesh, size: int, axis: int = 0):
    """The global array with ``size`` rows along ``axis``, split over ``mesh``, from this
    process's rows ``local`` (``x[local_rows(mesh, size)]`` of the global batch ``x``)."""
    local = np.asarray(local)
    shape = (*local.shape[:axis], size, *local.shape[axis + 1 :])
    return jax.make_array_from_process_local_data(batch_sharding(mesh, axis), local, shape)


def local_copy(tree):
    """Each replicated leaf as the single-device copy on this process's first device (NumPy
    leaves as they are): what evaluation and saving read, with no collective."""

    def one(leaf):
        if not isinstance(leaf, jax.Array) or len(leaf.sharding.device_set) == 1:
            return leaf
        if not leaf.is_fully_replicated:
            raise ValueError(f"local_copy: a leaf of shape {leaf.shape} is sharded, not replicated")
        return leaf.addressable_data(0)

    return jax.tree_util.tree_map(one, tree)


def jit_replicated(fn: Callable, mesh: Mesh, donate: tuple[int, ...] = ()) -> Callable:
    """``jax.jit(fn)`` whose outputs are all replicated over ``mesh`` (params, optimizer
    state, losses); the inputs bring their own shardings (``replicate``, ``place``)."""
    return jax.jit(fn, out_shardings=replicated(mesh), donate_argnums=donate)


class AllReduces(NamedTuple):
    """What a compiled program all-reduces: op count, array elements and bytes."""

    ops: int
    elements: int
    bytes: int


def all_reduces(compiled_text: str) -> AllReduces:
    """The all-reduces of a compiled program's HLO text (``jit(f).lower(...).compile()
    .as_text()``): what each step sends over the devices, read off the program itself."""
    ops = elements = size = 0
    for line in compiled_text.splitlines():
        m = re.search(r"= (\(.*?\)|\S+) all-reduce(?:-start)?\(", line)
        if m:
            ops += 1
            for bits, dims in re.findall(r"[fsu](\d+)\[([\d,]*)\]", m.group(1)):
                n = math.prod(int(d) for d in dims.split(",") if d)
                elements += n
                size += n * int(bits) // 8
    return AllReduces(ops, elements, size)


__all__ = [
    "AXIS",
    "AllReduces",
    "all_reduces",
    "batch_sharding",
    "check_mesh",
    "check_same_settings",
    "data_mesh",
    "initialize",
    "is_main",
    "jit_replicated",
    "leave",
    "local_copy",
    "local_rows",
    "place",
    "replicate",
    "replicated",
    "use_cpu_devices",
]
