"""A ``funcnet train`` run's settings, from its flags: each default left to the task filled
from ``tasks.TASKS``, the checks of flags that go together, what a ``--checkpoint`` records
and what a ``--resume`` must match.  What is recorded is what the flags declare
``recorded``; nothing here lists flags again."""

from __future__ import annotations

import argparse
import math

from . import _flags as flag
from . import _setup
from ._flags import ALL, UsageError

RECORDED = tuple(f for f in ALL if f.recorded)
PER_TASK = tuple(f for f in ALL if f.per_task)


def resolved(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` with each setting left to the task (None) filled from its registry entry;
    refuses a model or optimizer the task does not offer."""
    from ..tasks import TASKS

    task = TASKS[args.task]
    for f, offered in [(flag.MODEL, task.models), (flag.OPTIMIZER, task.learning_rates)]:
        value = getattr(args, f.dest)
        if value is not None and value not in offered:
            raise UsageError(
                f"{f} {value} is not offered for {flag.TASK} {task.name}: use one of "
                f"{', '.join(offered)}"
            )
    _refuse_other_loop(args, task)
    for f in PER_TASK:  # e.g. --reverse for MNIST: a setting no model of the task has
        if getattr(args, f.dest) is not None and f.dest != "lr":
            if all(task.setting(m, f.dest) is None for m in task.models):
                takers = [t.name for t in TASKS.values() if t.setting(t.defaults["model"], f.dest)
                          is not None]  # fmt: skip
                raise UsageError(
                    f"{f} is not a setting of {flag.TASK} {task.name}; it is one of "
                    f"{flag.TASK} {' and '.join(takers)}"
                )
    given = {f.dest: getattr(args, f.dest) for f in PER_TASK}
    # Only the flags left to the task: its other defaults (backend) never override a flag.
    filled = {k: v for k, v in task.resolve(given).items() if k in given}
    return argparse.Namespace(**{**vars(args), **filled})


def _refuse_other_loop(args: argparse.Namespace, task) -> None:
    """A flag given that shapes only the other kind of run (``Flag.loop``): epochs for a task
    that trains by iterations, or the reverse."""
    from ..tasks import TASKS

    for f in ALL:
        if f.loop in (None, task.loop) or not hasattr(args, f.dest):
            continue
        value = getattr(args, f.dest)
        if value is not None and value is not False and value != _default(f):
            takers = [t.name for t in TASKS.values() if t.loop == f.loop]
            raise UsageError(
                f"{f} is for {flag.TASK} {' or '.join(takers)}: {flag.TASK} {task.name} counts "
                f"its run in {task.loop}"
            )


def _default(f):
    return f.default() if callable(f.default) else f.default


def settings(args: argparse.Namespace) -> dict:
    """The run's settings, resolved: what a --checkpoint records, by the flags' names
    (``dest``).  A setting the model does not take (``hidden`` of a convnet) is None."""
    from ..models import MODELS
    from ..tasks import TASKS

    others = {o for m in MODELS.values() for o in m.options} - set(MODELS[args.model].options)
    loop = TASKS[args.task].loop  # the flags of the other kind of run are not recorded
    return {
        f.dest: None if f.dest in others else getattr(args, f.dest)
        for f in RECORDED
        if f.loop in (None, loop)
    }


def resume_problem(args: argparse.Namespace) -> str | None:
    """Why ``--resume`` cannot continue with these flags (None when it can): a file that
    is no run checkpoint, other settings (other batches or steps), no epoch left to run."""
    from ..checkpoints import run_info

    try:
        done, meta = run_info(args.resume)
    except ValueError as e:
        return str(e).split(": ", 1)[1]
    if meta.get("saved") == "params":
        return f"it holds trained params ({flag.SAVE}), not a run: resume from a {flag.CHECKPOINT}"
    mine = settings(args)
    for f in RECORDED:
        if f.dest not in mine:
            continue
        # A checkpoint from before a flag existed ran with its legacy value.
        then, now = meta.get(f.dest, f.legacy), mine[f.dest]
        if then != now:
            return f"it was written with {f} {then}, this run has {now}"
    if "iters" in mine and done >= args.iters:
        return f"all {done} iterations are done already"
    if "iters" not in mine and done >= args.epochs:
        return f"{done} epochs are done already; ask for more with {flag.EPOCHS}"
    return None


def check(args: argparse.Namespace) -> argparse.Namespace:
    """The checks of flags that go together (``UsageError``, before any work); returns
    ``args`` with ``backend`` set where it was left to follow the scale-out flags."""
    from ..models import MODELS
    from ..tasks import TASKS

    scaled = [f for f in (flag.DEVICES, flag.COORDINATOR, flag.CLUSTER) if getattr(args, f.dest)]
    if args.backend == "numpy" and scaled:
        raise UsageError(f"{scaled[0]} runs the step on JAX devices: drop {flag.BACKEND} numpy")
    backend = args.backend or ("jax" if scaled else TASKS[args.task].setting(args.model, "backend"))
    backend = backend or "numpy"
    args = argparse.Namespace(**{**vars(args), "backend": backend})
    if args.scan and args.backend != "jax":
        raise UsageError(f"{flag.SCAN} compiles each epoch with JAX: add {flag.BACKEND} jax")
    shape = MODELS[args.model].input_shape
    if args.augment and (shape is None or len(shape) != 3):
        from ..tasks import TASKS

        images = [m for m in TASKS[args.task].models if len(MODELS[m].input_shape or ()) == 3]
        raise UsageError(
            f"{flag.AUGMENT} shifts images: use it with {flag.MODEL} {' or '.join(images)}"
        )
    if args.augment and args.augment >= min(shape[1:]) // 2:
        raise UsageError(
            f"{flag.AUGMENT} {args.augment} would shift a {shape[1]}x{shape[2]} digit out of sight "
            f"(< {min(shape[1:]) // 2})"
        )
    if args.heads and args.width % args.heads:
        raise UsageError(f"{flag.WIDTH} {args.width} does not split into {flag.HEADS} {args.heads}")
    if args.subset and args.batch > args.subset:
        raise UsageError(f"{flag.BATCH} {args.batch} is larger than {flag.SUBSET} {args.subset}")
    _check_size(args)
    _check_processes(args)
    from ..checkpoints import conflicting_outputs

    if problem := conflicting_outputs(args.save, args.checkpoint, args.resume):
        raise UsageError(problem)
    if args.resume:
        problem = resume_problem(args)
        if problem:
            raise UsageError(f"{flag.RESUME} {args.resume}: {problem}")
    return args


def _known_sizes(task: str) -> tuple[int, int] | None:
    """(training, test) examples of a task whose files have a fixed size (MNIST's are
    checked against their checksums); None where they come from the data given."""
    from ..data import TEST_SIZE, TRAIN_SIZE

    return {"mnist": (TRAIN_SIZE, TEST_SIZE)}.get(task)


def _check_size(args: argparse.Namespace) -> None:
    """A batch the training set cannot fill, and a run that would not fit in memory (an
    estimate: ``_setup.memory_problem``), refused before any work."""
    from ..tasks import TASKS

    if TASKS[args.task].loop != "epochs":
        return
    sizes = _known_sizes(args.task)
    if sizes and not args.subset and args.batch > sizes[0]:
        raise UsageError(
            f"{flag.BATCH} {args.batch} is larger than the {sizes[0]} training "
            f"{TASKS[args.task].unit} of {flag.TASK} {args.task}"
        )
    from ..models import MODELS

    shape = MODELS[args.model].input_shape
    data = sum(sizes) * math.prod(shape or ()) * 4 if sizes else 0  # float32 inputs
    if problem := _setup.memory_problem(args, data):
        raise UsageError(problem)


def _check_processes(args: argparse.Namespace) -> None:
    """The scale-out flags: one way to name the processes, and a batch that splits evenly."""
    given = [f for f in (flag.NUM_PROCESSES, flag.PROCESS_ID) if getattr(args, f.dest) is not None]
    if args.cluster and (args.coordinator or given):
        other = flag.COORDINATOR if args.coordinator else given[0]
        raise UsageError(f"{flag.CLUSTER} reads the processes from the environment: drop {other}")
    if args.coordinator and len(given) < 2:
        raise UsageError(f"{flag.COORDINATOR} needs {flag.NUM_PROCESSES} and {flag.PROCESS_ID}")
    if given and not args.coordinator:
        raise UsageError(f"{given[0]} needs {flag.COORDINATOR} HOST:PORT")
    if args.coordinator and args.process_id >= args.num_processes:
        raise UsageError(
            f"{flag.PROCESS_ID} {args.process_id} must be below "
            f"{flag.NUM_PROCESSES} {args.num_processes}"
        )
    if args.devices:
        n = args.devices * (args.num_processes or 1)
        if args.batch % n:
            raise UsageError(
                f"{flag.BATCH} {args.batch} does not split evenly over {n} devices (use a multiple "
                f"of {n})"
            )
