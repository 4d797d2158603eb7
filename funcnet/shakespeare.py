"""Tiny Shakespeare as nanoGPT's ``shakespeare_char`` prepares it: a character vocabulary,
the first 90 % of the text for training and the last 10 % for validation.

The file (``input.txt``, 1,115,394 characters, 65 distinct) is looked up in the ``path``
argument, in ``$FUNCNET_SHAKESPEARE`` (the file or its folder), and in
``../shared/tinyshakespeare/`` beside the checkout; its md5 is checked.  Nothing is
downloaded.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

MD5 = "6fb458f1232090904fb40fe944165e91"
ENV_VAR = "FUNCNET_SHAKESPEARE"
_BESIDE_CHECKOUT = Path(__file__).resolve().parent.parent.parent / "shared" / "tinyshakespeare"


class Corpus(NamedTuple):
    """``chars``: the vocabulary, sorted (id i is ``chars[i]``); ``train``, ``val``: the two
    splits as int32 ids."""

    chars: str
    train: np.ndarray
    val: np.ndarray

    @property
    def vocab(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        """The ids of ``text``; a character outside the vocabulary is a ValueError."""
        index = {c: i for i, c in enumerate(self.chars)}
        missing = sorted(set(text) - set(index))
        if missing:
            raise ValueError(f"shakespeare: characters {missing!r} are not in the vocabulary")
        return np.array([index[c] for c in text], dtype=np.int32)

    def decode(self, ids) -> str:
        """The text of a sequence of ids."""
        return "".join(self.chars[int(i)] for i in np.asarray(ids).reshape(-1))


def _corpus_in(where) -> Path | None:
    p = Path(where)
    p = p / "input.txt" if p.is_dir() else p
    return p if p.is_file() else None


def find(path: str | os.PathLike | None = None) -> Path | None:
    """The corpus file, from ``path``, ``$FUNCNET_SHAKESPEARE`` or beside the checkout;
    ``None`` when none of them has it.  A ``$FUNCNET_SHAKESPEARE`` without the corpus is a
    FileNotFoundError naming it (when no ``path`` is given)."""
    named = os.environ.get(ENV_VAR)
    if named and path is None and _corpus_in(named) is None:
        # A place the user named is the one meant: another would hide the mistake.
        why = "does not exist" if not Path(named).exists() else "holds no input.txt"
        raise FileNotFoundError(f"shakespeare: ${ENV_VAR} is set to {named}, which {why}")
    for where in (path, named, _BESIDE_CHECKOUT):
        if where and (found := _corpus_in(where)) is not None:
            return found
    return None


def load(path: str | os.PathLike | None = None, *, check_md5: bool = True) -> Corpus:
    """Read, check and split the corpus (``find`` says where it is looked up)."""
    p = find(path)
    if p is None:
        raise FileNotFoundError(
            f"shakespeare: input.txt not found (looked in {path or '-'}, ${ENV_VAR} and "
            f"{_BESIDE_CHECKOUT}); it is karpathy/char-rnn's data/tinyshakespeare/input.txt"
        )
    raw = p.read_bytes()
    if check_md5 and hashlib.md5(raw).hexdigest() != MD5:
        raise ValueError(f"shakespeare: {p} has md5 {hashlib.md5(raw).hexdigest()}, not {MD5}")
    return split(raw.decode("utf-8"))


def split(text: str, train_fraction: float = 0.9) -> Corpus:
    """``text`` as a ``Corpus``: its sorted characters, then the first ``train_fraction``
    of it (rounded down, as nanoGPT's ``int(n * 0.9)``) for training and the rest for
    validation."""
    chars = "".join(sorted(set(text)))
    lookup = np.zeros(max(map(ord, chars)) + 1, dtype=np.int32)
    lookup[[ord(c) for c in chars]] = np.arange(len(chars), dtype=np.int32)
    ids = lookup[np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)]
    n = int(len(ids) * train_fraction)
    return Corpus(chars, ids[:n], ids[n:])


__all__ = ["ENV_VAR", "MD5", "Corpus", "find", "load", "split"]
