"""Every flag of the ``funcnet`` commands, declared once: its name, how a value is parsed
and bounded, its default and help, and whether a run records it.

A command lists the flags it takes (``FLAGS`` in its module) and :func:`add_command` adds
them to its parser; a command that needs another default or help says so with
``FLAG.but(...)``, never by spelling the flag again.  Error messages name a flag through
its declaration (``f"{SCAN} needs ..."``: a flag prints as its name), and help texts
through ``{dest}`` fields (``"with {devices}"``), so each ``--name`` is written once.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple


class UsageError(Exception):
    """A run's flags that do not go together: ``main`` reports it as argparse reports a bad
    value (one line, exit status 2), before any work."""


class Group(NamedTuple):
    """A titled section of a command's --help."""

    title: str
    description: str


@dataclasses.dataclass(frozen=True)
class Flag:
    """One flag.  ``type`` parses and bounds a value (an argparse type: it raises
    ``ArgumentTypeError``).  ``help``, ``default`` and ``choices`` may be functions, called
    when the parser is built, so that a registry is imported only by the commands that
    offer it.  ``per_task``: the default is None and the run takes the value from its
    task's entry in ``tasks.TASKS`` (the help says which).  ``recorded``: a
    ``--checkpoint`` records the run's value and a ``--resume`` must match it; ``legacy``
    is the value a checkpoint written before the flag existed ran with.  ``loop``: the flag
    shapes only runs counted in ``"epochs"`` (``train.fit``) or in ``"iterations"`` (a
    task's own trainer, ``tasks.Task.train``); a run of the other kind refuses it."""

    name: str
    help: str | Callable[[], str]
    type: Callable[[str], Any] | None = None
    default: Any = None
    choices: Sequence[str] | Callable[[], Sequence[str]] | None = None
    metavar: str | tuple[str, ...] | None = None
    nargs: int | str | None = None
    switch: bool = False
    required: bool = False
    group: Group | None = None
    per_task: bool = False
    recorded: bool = False
    legacy: Any = None
    loop: str | None = None

    @property
    def dest(self) -> str:
        """The attribute of the parsed arguments and the key of the recorded settings."""
        return self.name.removeprefix("--").replace("-", "_")

    def __str__(self) -> str:
        return self.name

    def but(self, **changes) -> Flag:
        """This flag with another default, help, choices, ...: the same name."""
        return dataclasses.replace(self, **changes)

    def add_to(self, parser) -> None:
        """Adds this flag to ``parser`` (or an argument group of it)."""
        text = _called(self.help).format_map(_NAMES)
        if self.per_task:
            from ..tasks import describe_default

            text += f"; None: by {TASK} ({describe_default(self.dest)})"
        if self.switch and self.per_task:  # on, off (--no-NAME) or the task's: None
            parser.add_argument(self.name, action=argparse.BooleanOptionalAction, help=text)
            return
        if self.switch:
            parser.add_argument(self.name, action="store_true", help=text)
            return
        extra = {"nargs": self.nargs} if self.nargs is not None else {}
        if self.required:
            extra["required"] = True
        parser.add_argument(
            self.name, type=self.type, default=_called(self.default), choices=_called(self.choices),
            metavar=self.metavar, help=text, **extra,
        )  # fmt: skip


def _called(value):
    return value() if callable(value) else value


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each default, except where there is none to show (None, a flag's False)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def add_command(subparsers, name: str, flags: Sequence[Flag]):
    """The parser of command ``name`` (its help from ``cli.COMMANDS``) with ``flags``, each
    group's in its own section."""
    from ._commands import COMMANDS

    parser = subparsers.add_parser(name, help=COMMANDS[name][1], formatter_class=_Help)
    groups: dict[Group, Any] = {}
    for flag in flags:
        where = parser
        if flag.group is not None:
            if flag.group not in groups:
                title, text = flag.group
                groups[flag.group] = parser.add_argument_group(title, text.format_map(_NAMES))
            where = groups[flag.group]
        flag.add_to(where)
    return parser


# --------------------------------------------------------------------------- value parsers


def _number(kind, text: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text}")
    return value


def decay(text: str) -> float:
    value = _number(float, text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def positive(kind):
    def parse(text: str):
        value = _number(kind, text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    parse.__name__ = f"positive {kind.__name__}"
    return parse


def non_negative_int(text: str) -> int:
    value = _number(int, text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = _number(float, text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def finite(text: str) -> float:
    value = _number(float, text)
    if abs(value) > 1e100:  # x1² + x2² would overflow to inf
        raise argparse.ArgumentTypeError(f"must be within ±1e100, got {text}")
    return value


def existing_file(text: str) -> str:
    if not os.path.isfile(text):
        what = "is a directory" if os.path.isdir(text) else "does not exist"
        raise argparse.ArgumentTypeError(f"{text} {what}")
    return text


def address(text: str) -> str:
    """``HOST:PORT`` of the coordinator (process 0), the port in 1..65535."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, port 1..65535, got {text!r}")
    return text


def save_path(text: str) -> str:
    """A file the run can write at the end: checked before any work, so that a finished run
    is never lost to a bad path found late."""
    path = os.path.abspath(text)
    folder = os.path.dirname(path)
    if os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"{text} is a directory; give a file name")
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise argparse.ArgumentTypeError(f"folder {folder} is not writable")
    return text


def _models() -> tuple[str, ...]:
    from ..models import MODELS

    return tuple(MODELS)


def _tasks() -> tuple[str, ...]:
    from ..tasks import TASKS

    return tuple(TASKS)


def _optimizers() -> tuple[str, ...]:
    from ..tasks import TASKS

    return tuple(dict.fromkeys(o for t in TASKS.values() for o in t.learning_rates))


def _model_help() -> str:
    from ..models import MODELS

    return "the network: " + "; ".join(f"{n}: {m.description}" for n, m in MODELS.items())


def _default_task() -> str:
    from ..tasks import DEFAULT_TASK

    return DEFAULT_TASK


def default_task_setting(key: str) -> Callable[[], Any]:
    """A ``Flag.default`` for commands without ``--task`` (eval, profile): the default
    task's setting ``key``, read when the parser is built."""

    def default():
        from ..tasks import DEFAULT_TASK, TASKS

        return TASKS[DEFAULT_TASK].defaults[key]

    return default


# --------------------------------------------------------------------------- the flags

# What is learnt, from what
# Checkpoints from before --task were MNIST runs: their legacy value.
TASK = Flag("--task", "what to learn", default=_default_task, choices=_tasks, recorded=True,
            legacy="mnist")  # fmt: skip
MODEL = Flag("--model", _model_help, choices=_models, per_task=True, recorded=True)
HIDDEN = Flag("--hidden", "mlp hidden units; seq2seq, peeky, attention: LSTM units",
              positive(int), per_task=True, recorded=True, loop="epochs")  # fmt: skip
WEIGHT_STD = Flag("--weight-std", "mlp, convnet: initial weights N(0, std²); deep: He's",
                  positive(float), 0.01, loop="epochs")  # fmt: skip
DATA_DIR = Flag("--data-dir", "mnist: folder with the four MNIST files; None: $FUNCNET_DATA, "
                "then ~/.cache/funcnet/mnist, downloading there if missing. shakespeare: "
                "input.txt or its folder; None: $FUNCNET_SHAKESPEARE, then "
                "../shared/tinyshakespeare beside the checkout. addition, date: the folder "
                "holding addition.txt or date.txt, or a file of that format; None: "
                "$FUNCNET_SEQ2SEQ_DIR, then ../shared/seq2seq beside the checkout")  # fmt: skip
SUBSET = Flag("--subset", "use only the first N training images (0: all)",
              non_negative_int, 0, recorded=True, loop="epochs")  # fmt: skip
TEST_SUBSET = Flag("--test-subset", "score every epoch and the final line on only the first "
                   "N test images (0: all)", non_negative_int, 0, metavar="N",
                   loop="epochs")  # fmt: skip
AUGMENT = Flag("--augment", "convnet, deep: shift every training image by up to PIXELS in "
               "each direction, at random (augment.random_shift); 0: off", non_negative_int, 0,
               metavar="PIXELS", recorded=True, legacy=0, loop="epochs")  # fmt: skip

# Sequence tasks (addition, date: the second book's seq2seq models)
WORDVEC = Flag("--wordvec", "seq2seq, peeky, attention: embedding width", positive(int),
               per_task=True, recorded=True, loop="epochs")  # fmt: skip
REVERSE = Flag("--reverse", "read each question backwards (the book's is_reverse)",
               switch=True, per_task=True, recorded=True, loop="epochs")  # fmt: skip

# How it is learnt
EPOCHS = Flag("--epochs", "passes over the data", positive(int), per_task=True, loop="epochs")
BATCH = Flag("--batch", "mini-batch size", positive(int), per_task=True, recorded=True)
OPTIMIZER = Flag("--optimizer", "the update rule", choices=_optimizers, per_task=True,
                 recorded=True)  # fmt: skip
LR = Flag("--lr", "learning rate", positive(float), per_task=True, recorded=True)
LR_SCHEDULE = Flag("--lr-schedule", "cosine: the rate decays from {lr} to 0 over the run's "
                   "steps", default="constant", choices=("constant", "cosine"), recorded=True,
                   legacy="constant", loop="epochs")  # fmt: skip
CLIP = Flag("--clip", "rescale the gradients to a global norm of at most NORM before each "
            "update (optim.clip_by_global_norm); 0: off", non_negative_float, metavar="NORM",
            per_task=True, recorded=True, loop="epochs")  # fmt: skip
AVERAGE = Flag("--average", "score and save a moving average of the params "
               "(optim.with_average); 0 turns it off", decay, metavar="DECAY", per_task=True,
               recorded=True, loop="epochs")  # fmt: skip
SEED = Flag("--seed", "initial weights, shuffling (or windows) and dropout", non_negative_int,
            0, recorded=True)  # fmt: skip
BACKEND = Flag("--backend", "numpy: eager steps; jax: a jitted step; None: jax with {devices}, "
               "{coordinator} or {cluster}, else the task's (jax for shakespeare, numpy for "
               "mnist)", choices=("numpy", "jax"))  # fmt: skip
SCAN = Flag("--scan", "jax: run each epoch as one lax.scan", switch=True, loop="epochs")

# Runs counted in iterations (--task shakespeare: nanoGPT's CPU recipe by default)
ITERS = Flag("--iters", "training steps, each on {batch} random windows; the learning rate "
             "warms up over the first 100 (fewer in a shorter run), then decays along a cosine "
             "to {lr}/10 at the last", positive(int), per_task=True, recorded=True,
             loop="iterations")  # fmt: skip
EVAL_EVERY = Flag("--eval-every", "score the validation loss every N iterations and after the "
                  "last (0: after the last only)", non_negative_int, metavar="N", per_task=True,
                  recorded=True, loop="iterations")  # fmt: skip
LAYERS = Flag("--layers", "gpt: transformer blocks", positive(int), per_task=True,
              recorded=True, loop="iterations")  # fmt: skip
HEADS = Flag("--heads", "gpt: attention heads per block; they split {width}", positive(int),
             per_task=True, recorded=True, loop="iterations")  # fmt: skip
WIDTH = Flag("--width", "gpt: embedding width", positive(int), per_task=True, recorded=True,
             loop="iterations")  # fmt: skip
CONTEXT = Flag("--context", "gpt: characters the model reads at once (a window's length)",
               positive(int), per_task=True, recorded=True, loop="iterations")  # fmt: skip
DROPOUT = Flag("--dropout", "gpt: dropout rate after the embeddings and each block's two "
               "branches", decay, metavar="RATE", per_task=True, recorded=True,
               loop="iterations")  # fmt: skip

# What is kept
SAVE = Flag("--save", "write the trained params here (also on Ctrl-C, those of the last "
            "finished epoch, or iteration)", save_path, metavar="FILE.npz")  # fmt: skip
CHECKPOINT = Flag("--checkpoint", "after every epoch (or evaluation, and on Ctrl-C), write what "
                  "{resume} needs: the last params, the optimizer state, the epoch (iteration) "
                  "count and the settings", save_path, metavar="RUN.npz")  # fmt: skip
RESUME = Flag("--resume", "continue a run from its {checkpoint} file, on the batches it would "
              "have seen (same settings; any device count)", existing_file,
              metavar="RUN.npz")  # fmt: skip
LOAD = Flag("--load", "params saved by funcnet train {save}; with several files, the "
            "ensemble that averages their softmax outputs is scored too", existing_file,
            required=True, nargs="+", metavar="FILE.npz")  # fmt: skip

# What is shown
NO_PLOT = Flag("--no-plot", "print the numbers only", switch=True)
NO_COLOR = Flag("--no-color", "plots without colour", switch=True)
SHOW = Flag("--show", "mnist: misclassified digits to draw; addition, date: test questions "
            "to answer", non_negative_int, 12)  # fmt: skip

# Many devices and processes (funcnet.parallel)
SCALE = Group("many devices and processes", "data parallel: each batch split over the "
              "devices, params replicated, gradients all-reduced (docs/scale.md); these imply "
              "{backend} jax")  # fmt: skip
DEVICES = Flag("--devices", "devices of each process to split every batch over (on a CPU-only "
               "machine, N host devices); None: 1, or all of them with {coordinator}/{cluster}",
               positive(int), metavar="N", group=SCALE, loop="epochs")  # fmt: skip
COORDINATOR = Flag("--coordinator", "process 0's address: start one process per host (or per "
                   "GPU) with {num_processes} and its {process_id}", address,
                   metavar="HOST:PORT", group=SCALE, loop="epochs")  # fmt: skip
NUM_PROCESSES = Flag("--num-processes", "processes in the run (with {coordinator})",
                     positive(int), metavar="P", group=SCALE, loop="epochs")  # fmt: skip
PROCESS_ID = Flag("--process-id", "this process's index, 0..P-1; 0 prints and saves",
                  non_negative_int, metavar="I", group=SCALE, loop="epochs")  # fmt: skip
CLUSTER = Flag("--cluster", "let JAX read the processes from the cluster's environment "
               "(SLURM, Open MPI, ...) instead of {coordinator}", switch=True,
               group=SCALE, loop="epochs")  # fmt: skip
PEER_TIMEOUT = Flag("--peer-timeout", "how long a process waits for a peer to join or to "
                    "answer; a process that dies makes the others stop within about this time",
                    positive(int), 120, metavar="SECONDS", group=SCALE,
                    loop="epochs")  # fmt: skip

# funcnet demo
X0 = Flag("--x0", "the starting point", finite, [-3.0, 4.0], metavar=("X1", "X2"), nargs=2)
STEPS = Flag("--steps", "gradient steps", non_negative_int, 20)
GRAD = Flag("--grad", "central differences (h=1e-4) or jax.grad", default="numerical",
            choices=("numerical", "jax"))  # fmt: skip

# funcnet sample
PROMPT = Flag("--prompt", "the text to go on from (characters of the training text); None: a "
              "new line", metavar="TEXT")  # fmt: skip
TOKENS = Flag("--tokens", "characters to generate after the prompt", positive(int), 300)
TEMPERATURE = Flag("--temperature", "the logits are divided by it before each draw: below 1 "
                   "surer, above 1 more varied", positive(float), 0.8)  # fmt: skip

# funcnet profile
REPEATS = Flag("--repeats", "timed steps (medians) after one warm-up step", positive(int), 5)

ALL = tuple(v for v in dict(globals()).values() if isinstance(v, Flag))
# Help texts name other flags as {dest}: filled from here.
_NAMES = {f.dest: f.name for f in ALL}
