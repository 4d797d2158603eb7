"""The second book's toy sequence sets (``addition.txt``, ``date.txt``) and files like them.

A line is a question, then ``_`` and its answer, padded with spaces so that every question
has one length and every answer another (``16+75  _91  ``).  ``load_seq2seq`` reads one the
way the book's ``dataset/sequence.py`` does, so its test set is the book's: the answer keeps
``_`` as the decoder's start symbol; the vocabulary is every character in order of first
appearance (each line's question, then its answer); the rows are shuffled with seed 1984
through NumPy's legacy ``RandomState`` and the last 10 % are held out.

``teacher_forcing(questions, answers)`` turns the book's ``(x, t)`` into the one input
array and the targets that the seq2seq models of ``funcnet.models`` train on.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

MD5 = {
    "addition.txt": "0be232e09ddbc99aa7c7f54b5081dbc0",
    "date.txt": "831a4a9fd17c969a1419bb4b86253987",
}
ENV = "FUNCNET_SEQ2SEQ_DIR"


class Seq2seqData(NamedTuple):
    """Questions ``x`` (N, Tq) and answers ``t`` (N, Ta) of character ids (int32), as the
    book's ``load_data`` returns them, and the vocabulary both ways."""

    x_train: np.ndarray
    t_train: np.ndarray
    x_test: np.ndarray
    t_test: np.ndarray
    char_to_id: dict
    id_to_char: dict

    @property
    def vocab_size(self) -> int:
        return len(self.char_to_id)

    @property
    def start_id(self) -> int:
        """The id of ``_``, the first character of every answer."""
        return self.char_to_id["_"]


def data_dirs() -> list[Path]:
    """Where the named sets are looked for: ``$FUNCNET_SEQ2SEQ_DIR``, then ``shared/seq2seq``
    beside the checkout."""
    dirs = [Path(os.environ[ENV])] if os.environ.get(ENV) else []
    return [*dirs, Path(__file__).resolve().parents[2] / "shared" / "seq2seq"]


def find_file(source) -> tuple[Path, str | None]:
    """A path, or a set's name (``"addition"``, ``"date"``) -> (its path, the md5 to expect)."""
    name = f"{source}.txt" if str(source) in ("addition", "date") else None
    if name is None:
        return Path(source), None
    if os.environ.get(ENV):
        # A folder the user named is the one meant: falling back to another would hide
        # the mistake.
        d = Path(os.environ[ENV])
        if not (d / name).is_file():
            why = (
                "does not exist" if not d.exists()
                else "is a file, not a folder" if not d.is_dir()
                else f"has no {name}"
            )  # fmt: skip
            raise FileNotFoundError(f"load_seq2seq: ${ENV} is set to {d}, which {why}")
        return d / name, MD5[name]
    for d in data_dirs():
        if (d / name).is_file():
            return d / name, MD5[name]
    where = ", ".join(str(d) for d in data_dirs())
    raise FileNotFoundError(
        f"load_seq2seq: {name} not found in {where}; set ${ENV} to the folder holding it"
    )


def parse_lines(text: str, label: str = "<text>") -> tuple[list[str], list[str]]:
    """Split every line at its first ``_``: (questions, answers with the ``_``).  A line
    without ``_``, or whose question or answer length differs from the first line's, is a
    ValueError naming the line."""
    questions, answers = [], []
    for i, line in enumerate(text.split("\n"), start=1):
        if line == "" and i > 1 and i == text.count("\n") + 1:
            break  # the newline that ends the last line
        at = line.find("_")
        if at < 0:
            raise ValueError(f"{label}: line {i} has no '_' between question and answer: {line!r}")
        q, a = line[:at], line[at:]
        if questions and (len(q), len(a)) != (len(questions[0]), len(answers[0])):
            raise ValueError(
                f"{label}: line {i} has a question of {len(q)} and an answer of {len(a)} "
                f"characters, line 1 {len(questions[0])} and {len(answers[0])}: pad them "
                f"with spaces to one length ({line!r})"
            )
        questions.append(q)
        answers.append(a)
    if not questions or not questions[0]:
        raise ValueError(f"{label}: no question before '_' on line 1 (or an empty file)")
    return questions, answers


def load_seq2seq(source="addition", *, seed: int | None = 1984, md5: str | None = None):
    """The book's ``dataset.sequence.load_data``: a set by name (``"addition"``, ``"date"``,
    looked for in ``data_dirs()`` and checked against its md5) or a path to a file of the
    same format (``md5`` checks it when given).  -> ``Seq2seqData``.

    ``seed=None`` keeps the file's order.  The split is the book's: the last
    ``N // 10`` rows after the shuffle are the test set.
    """
    path, expected = find_file(source)
    data = path.read_bytes()
    expected = md5 or expected
    if expected is not None and hashlib.md5(data).hexdigest() != expected:
        raise ValueError(
            f"load_seq2seq: {path} has md5 {hashlib.md5(data).hexdigest()}, expected {expected}"
        )
    questions, answers = parse_lines(data.decode("utf-8"), str(path))
    char_to_id: dict = {}
    for q, a in zip(questions, answers, strict=True):
        for ch in q + a:
            char_to_id.setdefault(ch, len(char_to_id))
    x = np.array([[char_to_id[c] for c in q] for q in questions], dtype=np.int32)
    t = np.array([[char_to_id[c] for c in a] for a in answers], dtype=np.int32)
    if seed is not None:
        order = np.arange(len(x))
        np.random.RandomState(seed).shuffle(order)  # the book's np.random.seed + shuffle
        x, t = x[order], t[order]
    split = len(x) - len(x) // 10
    id_to_char = {i: c for c, i in char_to_id.items()}
    return Seq2seqData(x[:split], t[:split], x[split:], t[split:], char_to_id, id_to_char)


def teacher_forcing(questions, answers, *, reverse: bool = False):
    """The book's ``(x, t)`` as a seq2seq model trains on them: the input
    ``[question | answer[:-1]]`` (N, Tq + Ta − 1), whose second part is what the decoder
    reads (``_`` first), and the targets ``answer[1:]`` (N, Ta − 1), what it must write.
    ``reverse`` reverses each question first (the book's ``is_reverse``)."""
    questions, answers = np.asarray(questions), np.asarray(answers)
    if questions.ndim != 2 or answers.ndim != 2 or len(questions) != len(answers):
        raise ValueError(
            f"teacher_forcing: expected questions (N, Tq) and answers (N, Ta), got "
            f"{questions.shape} and {answers.shape}"
        )
    if answers.shape[1] < 2:
        raise ValueError(
            "teacher_forcing: answers need a start symbol and at least one more character, "
            f"got shape {answers.shape}"
        )
    q = questions[:, ::-1] if reverse else questions
    return np.concatenate([q, answers[:, :-1]], axis=1), np.ascontiguousarray(answers[:, 1:])


def decode(ids, id_to_char: dict) -> str:
    """Ids back to their characters."""
    return "".join(id_to_char[int(i)] for i in np.asarray(ids).reshape(-1))


__all__ = [
    "MD5",
    "Seq2seqData",
    "data_dirs",
    "decode",
    "find_file",
    "load_seq2seq",
    "parse_lines",
    "teacher_forcing",
]
