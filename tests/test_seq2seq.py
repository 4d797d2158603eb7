"""The second book's toy sets and seq2seq models: the book's split and vocabulary, user
files and malformed lines, the models against the book's (loss, gradients, answers), the
jitted generator, exact match, a short training run, and the full runs (slow)."""

from __future__ import annotations

import hashlib
import importlib
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from funcnet import losses, models, optim, seq2seq, text, train

ROOT = Path(__file__).resolve().parents[1]
KEYS = [
    ("enc_embed", "W"),
    ("enc_lstm", "Wx"),
    ("enc_lstm", "Wh"),
    ("enc_lstm", "b"),
    ("dec_embed", "W"),
    ("dec_lstm", "Wx"),
    ("dec_lstm", "Wh"),
    ("dec_lstm", "b"),
    ("affine", "W"),
    ("affine", "b"),
]  # fmt: skip  (the book's params list, in order)


@pytest.fixture(scope="module")
def addition():
    try:
        return text.load_seq2seq("addition")
    except FileNotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def book(dlfs2):
    """The book's three models (tests/conftest.py's ``dlfs2`` finds its code)."""
    return {
        "plain": importlib.import_module("ch07.seq2seq").Seq2seq,
        "peeky": importlib.import_module("peeky_seq2seq").PeekySeq2seq,
        "attention": importlib.import_module("ch08.attention_seq2seq").AttentionSeq2seq,
    }


# --------------------------------------------------------------------------- data


def test_the_books_split_and_vocabulary(addition):
    d = addition
    assert d.x_train.shape == (45000, 7) and d.t_train.shape == (45000, 5)
    assert d.x_test.shape == (5000, 7) and d.t_test.shape == (5000, 5)
    assert list(d.char_to_id)[:8] == ["1", "6", "+", "7", "5", " ", "_", "9"]  # line 1 first
    assert d.vocab_size == 13 and d.start_id == 6
    # The book's first test question (its chapter-7 output) and the shuffle it comes from.
    assert text.decode(d.x_test[0], d.id_to_char) == "77+85  "
    assert text.decode(d.t_test[0], d.id_to_char) == "_162 "
    order = np.arange(50000)
    np.random.RandomState(1984).shuffle(order)
    lines = (text.find_file("addition")[0]).read_text().split("\n")
    assert lines[order[45000]].startswith("77+85  _162")


def test_a_users_file_works_and_malformed_lines_are_named(tmp_path):
    f = tmp_path / "mine.txt"
    f.write_text("ab_xy\nba_yx\nbb_yy\n")
    d = text.load_seq2seq(f, seed=None)
    assert d.char_to_id == {"a": 0, "b": 1, "_": 2, "x": 3, "y": 4}
    assert len(d.x_train) == 3 and len(d.x_test) == 0  # 3 // 10 held out
    np.testing.assert_array_equal(d.t_train[0], [2, 3, 4])
    digest = hashlib.md5(f.read_bytes()).hexdigest()
    assert text.load_seq2seq(f, md5=digest).vocab_size == 5
    with pytest.raises(ValueError, match="has md5"):
        text.load_seq2seq(f, md5="0" * 32)
    f.write_text("ab_xy\nba yx\n")
    with pytest.raises(ValueError, match=r"line 2 has no '_'"):
        text.load_seq2seq(f)
    f.write_text("ab_xy\nbab_yx\n")
    with pytest.raises(ValueError, match=r"line 2 has a question of 3 and an answer of 3"):
        text.load_seq2seq(f)
    with pytest.raises(FileNotFoundError):
        text.load_seq2seq(tmp_path / "absent.txt")


def test_teacher_forcing_packs_question_and_decoder_input():
    q, a = np.array([[1, 2, 3]]), np.array([[9, 4, 5]])
    x, t = text.teacher_forcing(q, a)
    np.testing.assert_array_equal(x, [[1, 2, 3, 9, 4]])
    np.testing.assert_array_equal(t, [[4, 5]])
    x, _ = text.teacher_forcing(q, a, reverse=True)
    np.testing.assert_array_equal(x, [[3, 2, 1, 9, 4]])


# --------------------------------------------------------------------------- models


def _model(kind, V, D, H, Tq):
    if kind == "attention":
        return models.attention_seq2seq(V, D, H, question_len=Tq)
    return models.seq2seq(V, D, H, peeky=kind == "peeky", question_len=Tq)


@pytest.mark.parametrize("kind", seq2seq.KINDS)
def test_same_loss_gradients_and_answers_as_the_books_model(book, kind):
    V, D, H, Tq, Ta = 13, 5, 6, 7, 5
    rng = np.random.default_rng(0)
    q, a = rng.integers(0, V, (4, Tq)), rng.integers(0, V, (4, Ta))
    x, t = text.teacher_forcing(q, a)
    ref, net = book[kind](V, D, H), _model(kind, V, D, H, Tq)
    params: dict = {}
    for p, (layer, key) in zip(ref.params, KEYS, strict=True):
        p[...] = rng.standard_normal(p.shape).astype(np.float32) * 0.5
        params.setdefault(layer, {})[key] = p.copy()
    value_ref = ref.forward(q, a)
    ref.backward()
    scores, cache = net.forward(params, x)
    value, lcache = losses.time_softmax_cross_entropy.forward(scores, t)
    grads, _ = net.backward(cache, losses.time_softmax_cross_entropy.backward(lcache))
    np.testing.assert_allclose(value, value_ref, rtol=1e-6)
    for g, (layer, key) in zip(ref.grads, KEYS, strict=True):
        np.testing.assert_allclose(grads[layer][key], g, rtol=1e-4, atol=1e-5 * np.abs(g).max())
    answers_ref = [ref.generate(q[i : i + 1], a[i, 0], Ta - 1) for i in range(4)]
    answers = net.generate(params, q, a[:, 0], Ta - 1)
    np.testing.assert_array_equal(answers, np.array(answers_ref))
    jitted = jax.jit(net.generate, static_argnums=3)(jax.device_put(params), q, a[:, 0], Ta - 1)
    np.testing.assert_array_equal(np.asarray(jitted), answers)


def test_attention_weights_come_out_of_the_generator():
    net = models.attention_seq2seq(6, 3, 4, question_len=5)
    _, params = net.init(0, (-1, 8))
    q = np.random.default_rng(1).integers(0, 6, (2, 5))
    ids, a = net.generate(params, q, 0, 3, weights=True)
    assert ids.shape == (2, 3) and a.shape == (2, 3, 5)
    np.testing.assert_allclose(a.sum(axis=-1), 1, rtol=1e-6)


def test_exact_match_counts_whole_answers_only():
    net = models.seq2seq(6, 3, 4, question_len=2)
    _, params = net.init(0, (-1, 4))
    x = np.array([[1, 2, 0, 3], [2, 1, 0, 4]])
    guess = np.asarray(net.generate(params, x[:, :2], x[:, 2], 2))
    t = guess.copy()
    assert seq2seq.exact_match(net, params, x, t) == 1.0
    t[1, 1] = (t[1, 1] + 1) % 6
    assert seq2seq.exact_match(net, params, x, t) == 0.5
    assert seq2seq.exact_match(net, jax.device_put(params), x, t, batch_size=1) == 0.5
    renamed = net._replace(name="mine")
    assert renamed.name == "mine" and renamed.generate is net.generate
    assert renamed.question_len == 2
    with pytest.raises(ValueError, match=r"expected input ids \(N, 2 \+ decoder steps\)"):
        net.forward(params, x[:, :2])


def test_a_short_jitted_run_lowers_the_loss(addition):
    """A few hundred steps of the book's peeky model with its optimizer on reversed
    questions: the loss falls well below its start (the full runs are the slow tests)."""
    x, t = text.teacher_forcing(addition.x_train[:6400], addition.t_train[:6400], reverse=True)
    net = models.seq2seq(addition.vocab_size, 16, 64, peeky=True, question_len=7)
    _, params = net.init(0, (-1, x.shape[1]))
    opt = optim.chain(optim.clip_by_global_norm(5.0), optim.adam(0.01))
    step = jax.jit(train.make_step(net, losses.time_softmax_cross_entropy, opt))
    params = jax.device_put(params)
    state, seen = opt.init(params), []
    for i in range(150):
        idx = slice((i % 50) * 128, (i % 50 + 1) * 128)
        params, state, loss = step(params, state, x[idx], t[idx])
        seen.append(float(loss))
    assert np.mean(seen[-10:]) < 0.75 * np.mean(seen[:10])


def test_the_example_runs_and_marks_its_answers(addition):
    import subprocess

    args = ["--epochs", "1", "--train-rows", "1280", "--backend", "numpy", "--reverse"]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "seq2seq_addition.py"), *args],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("epoch  1  loss ") and "test exact match" in lines[0]
    assert lines[1].startswith("Q 77+85    T 162   guess ")
    assert lines[1].endswith(("right", "WRONG"))
    assert lines[-1].startswith("test accuracy ") and lines[-1].endswith(
        "on all 5000 test questions"
    )


# --------------------------------------------------------------------------- the book's runs


def _example():
    path = ROOT / "examples" / "seq2seq_addition.py"
    mod: dict = {"__name__": "example"}
    exec(compile(path.read_text(), str(path), "exec"), mod)
    return mod


@pytest.mark.slow
def test_addition_peeky_reversed_reaches_the_books_98_percent(addition):
    _, accs, _, _ = _example()["run"]("addition", "peeky", True, 25, report=lambda s: None)
    assert accs[-1] >= 0.98, accs


@pytest.mark.slow
def test_date_attention_reaches_99_9_percent():
    _, accs, _, _ = _example()["run"]("date", "attention", True, 10, report=lambda s: None)
    assert accs[-1] >= 0.999, accs


@pytest.mark.parametrize("steps", [1, 2])
def test_the_peeky_decoders_hoisted_products_match_jax_on_short_answers(steps):
    """The peeky decoder computes h's share of its input and score products once per
    sequence and sums ∂L/∂(those) over the steps first: checked at one and two steps, with
    the independent forward."""
    from funcnet.cli import check

    model = seq2seq.build(6, 3, 4, "peeky", 5)
    _, params = model.init(1, (-1, 5 + steps), dtype=np.float64)
    rng = np.random.default_rng(steps)
    params = jax.tree_util.tree_map(lambda a: rng.standard_normal(a.shape), params)
    ids = rng.integers(0, 6, (3, 5 + steps))
    for arrays in ("numpy", "jax"):
        report = check._flat_vjp_case(model.name, model, params, (), ids=ids)(arrays)
        assert report.ok and report.max_ref_rel is not None, str(report)
