"""What a ``funcnet train`` run starts from: the task's data (cut by ``--subset`` and
``--test-subset``), the net and its first params, the optimizer, a resumed run's state."""

from __future__ import annotations

from ._flags import SUBSET, TEST_SUBSET
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
    return loaded._replace(train=(x, t), test=(xt, tt))


def model(args, data):
    """``(net, params)``: the registered model, built from the settings and data it takes,
    initialized from ``--seed``."""
    from ..models import MODELS

    given = {**vars(args), **data.model_args}
    net = MODELS[args.model].build(**{k: given[k] for k in MODELS[args.model].options})
    _, params = net.init(args.seed, (-1, *data.train[0].shape[1:]))
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
