"""What a ``funcnet train`` run starts from: the task's data (cut by ``--subset`` and
``--test-subset``), the net and its first params, the optimizer, a resumed run's state."""

from __future__ import annotations

import os

from ._flags import BATCH, SUBSET, TEST_SUBSET
from ._process import one_line


class Stop(Exception):
    """Ends a run early: one line on stderr, ``funcnet train: MESSAGE``, and ``code``."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def data(args, task):
    """The task's ``tasks.Data``, cut to the first ``--subset``/``--test-subset`` examples."""
    try:
        loaded = task.load(vars(args))
    except ValueError as e:  # missing or malformed files: the message says what to do
        raise Stop(2, one_line(e)) from None
    except MemoryError as e:
        raise Stop(1, f"not enough memory to load {task.name}'s data ({one_line(e)})") from None
    (x, t), (xt, tt) = loaded.train, loaded.test
    # The sizes are known only once the files are read: a cut beyond them is refused, not
    # quietly made smaller.
    for flag, n, have in [(SUBSET, args.subset, len(x)), (TEST_SUBSET, args.test_subset, len(xt))]:
        if n > have:
            raise Stop(2, f"{flag} {n} is more than the {have} {task.unit} there are")
    if args.subset:
        x, t = x[: args.subset], t[: args.subset]
    if args.test_subset:
        xt, tt = xt[: args.test_subset], tt[: args.test_subset]
    if task.loop == "epochs" and args.batch > len(x):  # a size known only from the files
        raise Stop(2, f"{BATCH} {args.batch} is more than the {len(x)} training {task.unit}")
    return loaded._replace(train=(x, t), test=(xt, tt))


def model(args, data):
    """``(net, params)``: the registered model, built from the settings and data it takes,
    initialized from ``--seed``."""
    from ..models import MODELS

    given = {**vars(args), **data.model_args}
    net = MODELS[args.model].build(**{k: given[k] for k in MODELS[args.model].options})
    try:
        _, params = net.init(args.seed, (-1, *data.train[0].shape[1:]))
    except MemoryError as e:
        raise Stop(1, f"the params of {net.name} do not fit in memory ({one_line(e)})") from None
    return net, params


def optimizer(args, steps_per_epoch: int):
    """``--optimizer`` at ``--lr`` (decayed over the run's steps with ``--lr-schedule
    cosine``), after the gradients are clipped to ``--clip`` (when not 0 or unset), with a
    moving average of the params when ``--average`` is not 0."""
    from .. import optim

    rate = args.lr
    if args.lr_schedule == "cosine":
        rate = optim.cosine_decay(args.lr, args.epochs * steps_per_epoch)
    opt = optim.by_name(args.optimizer, rate)
    if getattr(args, "clip", None):  # the second book's max_grad: clipped, then the update
        opt = optim.chain(optim.clip_by_global_norm(args.clip), opt)
    return optim.with_average(opt, args.average) if args.average else opt


def restored(args, params, opt):
    """``(params, opt_state, epochs done)``: those of the ``--resume`` file, else the fresh
    params, no state yet and 0."""
    if not args.resume:
        return params, None, 0
    from ..checkpoints import load_run
    from ..core import trainable

    try:
        saved = load_run(args.resume, params, opt.init(trainable(params)))
    except ValueError as e:
        raise Stop(1, str(e)) from None
    return saved.params, saved.opt_state, saved.epoch


def local(mesh, tree):
    """What is printed and saved: one copy, read with no collective."""
    if mesh is None:
        return tree
    from .. import parallel

    return parallel.local_copy(tree)


# --------------------------------------------------------------------------- memory

GiB = 2**30


def available_memory() -> int | None:
    """Bytes of memory a new allocation can get now: the kernel's MemAvailable (free memory
    plus the caches it can drop), else the free physical pages; None when neither is known."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _arrays(tree, seen: dict) -> dict:
    """Every distinct array in ``tree`` (tuples, lists, dicts of them), by id."""
    if isinstance(tree, dict):
        tree = list(tree.values())
    if isinstance(tree, list | tuple):
        for leaf in tree:
            _arrays(leaf, seen)
    elif hasattr(tree, "nbytes") and hasattr(tree, "shape"):
        seen[id(tree)] = tree
    return seen


def _bytes(tree) -> int:
    return sum(int(a.nbytes) for a in _arrays(tree, {}).values())


def memory_needed(net, params, example_shape, batch: int, opt, seed: int = 0) -> dict:
    """An estimate of the bytes a NumPy training step holds, by part (order of magnitude):
    the params and their gradients; the optimizer state, ``opt.init`` of a 1-element tree
    telling how many arrays of the params' size it keeps (0 for SGD, 2 for Adam); the
    activations, what a train-mode forward keeps for the backward (its output and caches)
    per example, measured as the difference between 2 examples and 1, times the batch, and
    twice that for the backward's gradients of the same sizes."""
    import numpy as np

    from ..core import trainable

    size = _bytes(params)
    one = {"w": np.zeros(1, np.float32)}
    slots = sum(a.ndim == 1 and a.size == 1 for a in _arrays(opt.init(one), {}).values())
    kept = []
    for n in (1, 2):  # the dtype of the params: the CLI's float32 data
        x = np.zeros((n, *example_shape), np.float32)
        kept.append(_bytes(net.forward(params, x, train=True, rng=seed)))
    per_example = max(kept[1] - kept[0], 0)
    return {
        "params and gradients": 2 * size,
        "optimizer state": slots * _bytes(trainable(params)),
        f"activations of {batch} examples": 2 * batch * per_example,
    }


def memory_problem(args, data_bytes: int = 0) -> str | None:
    """Why this ``funcnet train`` run would not fit in memory, before any work (None when
    it fits, or cannot be estimated: a JAX backend, a model whose input comes from the data).
    A MemoryError while making the params says so too."""
    from ..models import MODELS

    model = MODELS[args.model]
    if args.backend != "numpy" or model.input_shape is None:
        return None
    net = model.build(**{k: getattr(args, k) for k in model.options})
    try:
        _, params = net.init(args.seed, (-1, *model.input_shape))
        parts = memory_needed(net, params, model.input_shape, args.batch, optimizer(args, 1))
    except MemoryError as e:
        return f"the params of {net.name} do not fit in memory ({one_line(e)})"
    del params
    parts = {**parts, "data": data_bytes} if data_bytes else parts
    need, have = sum(parts.values()), available_memory()
    if have is None or need <= have:
        return None
    shown = ", ".join(f"{k} {v / GiB:.2g}" for k, v in parts.items())
    return (
        f"{net.name} needs about {need / GiB:.3g} GiB to train ({shown}), more than the "
        f"{have / GiB:.3g} GiB of memory available: use a smaller {BATCH} (or model)"
    )
