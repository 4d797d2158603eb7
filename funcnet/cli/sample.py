"""``funcnet sample``: text from a character GPT saved by ``funcnet train`` (its ``--save``
file carries the settings and the vocabulary the model is rebuilt from)."""

from __future__ import annotations

import sys

from . import _flags as flag
from ._flags import UsageError, add_command

FLAGS = (
    flag.LOAD.but(help="params of a character GPT saved by funcnet train {save}", nargs=None),
    flag.PROMPT,
    flag.TOKENS,
    flag.TEMPERATURE,
    flag.SEED.but(help="the sampling key: the same seed gives the same text"),
)


def add_parser(subparsers) -> None:
    add_command(subparsers, "sample", FLAGS).set_defaults(run=run)


def run(args) -> int:
    from ..checkpoints import load_run, run_info
    from ..shakespeare import Corpus

    prompt = "\n" if args.prompt is None else args.prompt
    if not prompt:
        raise UsageError(f"{flag.PROMPT} needs at least one character")
    try:
        _, meta = run_info(args.load)
    except ValueError as e:
        return _fail(f"{args.load} holds no saved GPT ({str(e).split(': ', 1)[-1]})")
    if meta.get("saved") != "params" or "chars" not in meta or "context" not in meta:
        return _fail(
            f"{args.load} holds no GPT params saved by funcnet train {flag.SAVE} (a run "
            f"checkpoint, or another model's file)"
        )
    chars = meta["chars"]
    missing = sorted(set(prompt) - set(chars))
    if missing:
        raise UsageError(
            f"{flag.PROMPT}: {''.join(missing)!r} not in the {len(chars)} characters the model "
            f"of {args.load} knows"
        )
    from .. import models
    from ..gpt import sample

    net = models.build(meta["model"], **meta)
    try:
        params = load_run(args.load, net.init(0, (-1, meta["context"]))[1], ()).params
    except ValueError as e:
        if "does not match the network" not in str(e):
            return _fail(str(e))
        # Its arrays list can run to dozens of names: one line says what the file is.
        return _fail(
            f"{args.load} holds a GPT of another layout than the one funcnet builds now "
            f"(nanoGPT's: no biases, exact GELU); train it again"
        )
    from .._checks import unusable_params

    if why := unusable_params(args.load, params, "sample"):
        return _fail(why)
    corpus = Corpus(chars, None, None)
    text = sample(
        net, params, corpus, prompt, tokens=args.tokens, temperature=args.temperature,
        seed=args.seed, context=meta["context"],
    )  # fmt: skip
    print(text)
    return 0


def _fail(message: str) -> int:
    print(f"funcnet sample: {message}", file=sys.stderr)
    return 1
