"""benchmarks/_torch_gpt.py, the PyTorch peer of benchmarks/gpt.py, computes what funcnet's
gpt computes: the same loss from the same params, and the same loss after the same training
steps (clipping, AdamW with nanoGPT's groups, the schedule).  Skipped without PyTorch."""

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import _torch_gpt as tg  # noqa: E402

from funcnet import gpt, train  # noqa: E402

R = gpt.Recipe(layers=2, heads=2, width=16, context=8, batch=3, warmup=2, decay_iters=6)


@pytest.fixture(autouse=True)
def _one_thread():
    # a tiny model gains nothing from a second OpenMP thread, and on a busy machine its
    # barriers cost up to a second a step
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _batches(n, vocab=11, seed=0):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, vocab, 500).astype(np.int32)
    return [gpt.windows(data, gpt.random_starts(500, R.context, R.batch, rng), R.context)
            for _ in range(n)]  # fmt: skip


def _funcnet_loss(net, params, x, t):
    return float(gpt.token_cross_entropy.forward(net.forward(params, x)[0], t)[0])


@pytest.mark.parametrize("bias", [True, False])
def test_same_loss_from_the_same_params(bias):
    # funcnet's biases and LayerNorm shifts start at 0: a bias-free torch model is the same
    # function at the start.
    net, params = tg.funcnet_start(11, R, seed=1)
    tnet = tg.model(11, R if bias else _Options(R, bias=False))
    tg.load_funcnet(tnet, params, R)
    (x, t), = _batches(1)  # fmt: skip
    with torch.no_grad():
        got = float(tg.loss_fn(tnet, tg.ids(x), tg.ids(t)))
    assert got == pytest.approx(_funcnet_loss(net, params, x, t), abs=1e-5)


class _Options:
    """A recipe with the model options funcnet's Recipe may carry (bias, gelu)."""

    def __init__(self, r, **options):
        self.__dict__.update(r._asdict(), **options)


def test_same_training_steps():
    net, params = tg.funcnet_start(11, R, seed=2)
    opt = gpt.optimizer(R)
    step = train.make_step(net, gpt.token_cross_entropy, opt)
    state = opt.init(params)
    tnet = tg.model(11, R)
    tg.load_funcnet(tnet, params, R)
    topt = tg.optimizer(tnet, R)
    for i, (x, t) in enumerate(_batches(8)):  # through the warm-up and the cosine
        params, state, loss = step(params, state, x, t)
        tloss = tg.step(tnet, topt, tg.ids(x), tg.ids(t), tg.lr_at(i, R), R.clip)
        assert float(tloss) == pytest.approx(float(loss), abs=1e-5), i
    with torch.no_grad():
        after = float(tg.loss_fn(tnet, tg.ids(x), tg.ids(t)))
    assert after == pytest.approx(_funcnet_loss(net, params, x, t), abs=1e-5)


def test_gelu_option():
    assert isinstance(tg.model(11, R).h[0].gelu, torch.nn.GELU)
    assert tg.model(11, _Options(R, gelu="erf")).h[0].gelu.approximate == "none"
    with pytest.raises(ValueError, match="gelu"):
        tg.model(11, _Options(R, gelu="relu"))
