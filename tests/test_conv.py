"""Tests for funcnet.layers.conv: forwards against jax.lax, backwards against jax.vjp (check_layer),
NumPy/JAX/jit agreement, dtypes, the max-pool tie rule and the error messages."""

from __future__ import annotations

import re

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from funcnet.core import pipeline, to_jax  # noqa: E402
from funcnet.gradcheck import GradcheckError, check_layer  # noqa: E402
from funcnet.layers import _conv_numpy as numpy_kernels  # noqa: E402
from funcnet.layers import _conv_xla as xla  # noqa: E402
from funcnet.layers import conv  # noqa: E402
from funcnet.layers._conv_numpy import DX_AS_CONV_MIN_CHANNELS  # noqa: E402
from funcnet.layers.conv import AvgPool, Conv, MaxPool  # noqa: E402

# (in_shape, out_channels, kernel, stride, padding): strides 1–2, paddings 0–2, odd and
# rectangular sizes, several channels, batch 1; every combination tiles its input exactly.
CONV_CASES = [
    ((2, 1, 6, 6), 3, 3, 1, 0),
    ((1, 3, 7, 7), 2, 3, 2, 0),
    ((2, 2, 5, 5), 4, 3, 1, 1),
    ((1, 2, 7, 9), 3, 3, 2, 1),
    ((2, 3, 5, 5), 2, 3, 1, 2),
    ((1, 2, 6, 6), 2, 5, 1, 2),
    ((1, 2, 6, 8), 3, (2, 3), (2, 1), (2, 0)),
    ((2, 2, 4, 4), 3, 1, 1, 0),
    ((1, 1, 5, 7), 2, (3, 1), (1, 2), (0, 1)),
    ((1, 2, 4, 6), 2, (3, 2), (3, 2), (1, 0)),  # windows that tile the padded input
    # From DX_AS_CONV_MIN_CHANNELS input channels on, NumPy's dx is a convolution of dy.
    ((2, 8, 5, 5), 3, 3, 1, 1),
    ((1, 9, 7, 6), 2, (3, 2), 2, (1, 0)),
]
# Where dx as a convolution meets its edges: a stride above the kernel (phases no tap
# reads), padding above k - 1 (dy cropped, not padded), and a 5x5 kernel at stride 2.
DX_EDGE_CASES = [
    ((2, 8, 8, 8), 3, 2, 3, 0),
    ((1, 8, 4, 5), 2, 3, 1, (3, 2)),
    ((2, 8, 9, 9), 2, 5, 2, 2),
]
# (in_shape, size, stride, padding)
POOL_CASES = [
    ((2, 3, 6, 6), 2, None, 0),
    ((1, 2, 7, 7), 3, 2, 1),
    ((2, 1, 5, 5), 3, 1, 1),
    ((1, 2, 5, 9), 2, 1, 0),
    ((2, 2, 4, 6), (2, 3), (2, 3), 0),
    ((1, 3, 7, 5), 3, 2, (1, 0)),
    ((1, 1, 6, 6), 3, 3, 0),
    ((1, 2, 4, 4), 2, None, 1),  # windows that tile the padded input
]
# The backward checks trace the forward eagerly in JAX, which compiles every distinct slice;
# a subset keeps the file fast while still covering overlap, padding and rectangles.
CONV_GRAD_CASES = [c for c in CONV_CASES if c[0] != (1, 2, 6, 6)]
POOL_GRAD_CASES = POOL_CASES[:3] + POOL_CASES[4:6]


def test_grad_cases_cover_both_dx_formulations():
    channels = [c[0][1] for c in CONV_GRAD_CASES]
    assert min(channels) < DX_AS_CONV_MIN_CHANNELS <= max(channels)
    strided = [c for c in CONV_GRAD_CASES if c[0][1] >= DX_AS_CONV_MIN_CHANNELS and c[3] != 1]
    assert strided, "dx as a convolution needs a strided case too (one per phase)"
    assert all(c[0][1] >= DX_AS_CONV_MIN_CHANNELS for c in DX_EDGE_CASES)


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def distinct(rng, shape, dtype=np.float64):
    """Values 0.5 apart in random order: no max-pool ties, and a finite-difference step
    never changes which element wins."""
    return (rng.permutation(int(np.prod(shape))).reshape(shape) * 0.5 - 3.0).astype(dtype)


def conv_layer(case, **options):
    _, f, k, s, p = case
    return Conv(f, k, stride=s, padding=p, **options)


def conv_setup(case, dtype=np.float64, seed=0):
    layer = conv_layer(case)
    _, params = layer.init(seed, (-1, *case[0][1:]), dtype)
    rng = np.random.default_rng(seed + 1)
    # A non-zero bias so that the bias path is exercised in the forward.
    params = {**params, "b": rng.standard_normal(params["b"].shape).astype(dtype)}
    return layer, params, rng.standard_normal(case[0]).astype(dtype)


def pool_layer(kind, case):
    _, size, stride, padding = case
    return kind(size, stride, padding)


def lax_conv(x, W, b, stride, padding):
    ph, pw = pair(padding)
    y = jax.lax.conv_general_dilated(
        x,
        W,
        window_strides=pair(stride),
        padding=((ph, ph), (pw, pw)),
        dimension_numbers=("NCHW", "OIHW", "NCHW"),
        precision=jax.lax.Precision.HIGHEST,
    )
    return y + b.reshape(1, -1, 1, 1)


def lax_pool(kind, x, size, stride, padding):
    kh, kw = pair(size)
    sh, sw = pair(size if stride is None else stride)
    ph, pw = pair(padding)
    pads = ((0, 0), (0, 0), (ph, ph), (pw, pw))
    if kind is MaxPool:
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 1, kh, kw), (1, 1, sh, sw), pads)
    total = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 1, kh, kw), (1, 1, sh, sw), pads)
    return total / (kh * kw)


def perturbed(layer, *, dx_factor=1.0, dW_factor=1.0):
    def backward(cache, dout, *, need_dx=True):
        dparams, dx = layer.backward(cache, dout, need_dx=need_dx)
        if "W" in dparams:
            dparams = {**dparams, "W": dparams["W"] * dW_factor}
        return dparams, (None if dx is None else dx * dx_factor)

    return layer._replace(backward=backward)


def assert_trees_close(a, b, rtol=1e-12, atol=1e-12):
    jax.tree_util.tree_map(
        lambda u, v: np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol, atol), a, b
    )


# --------------------------------------------------------------------------- init and shapes


def test_conv_init_shapes_and_fans():
    seen = {}

    def spy(rng, shape, dtype=np.float32, *, fan_in=None, fan_out=None):
        seen.update(shape=shape, fan_in=fan_in, fan_out=fan_out)
        return np.zeros(shape, dtype)

    out_shape, params = Conv(4, (3, 5), stride=2, padding=(1, 2), W_init=spy).init(
        0, (-1, 3, 9, 11)
    )
    assert out_shape == (-1, 4, 5, 6)
    assert seen == {"shape": (4, 3, 3, 5), "fan_in": 3 * 3 * 5, "fan_out": 4 * 3 * 5}
    assert params["W"].shape == (4, 3, 3, 5) and params["b"].shape == (4,)
    assert params["W"].dtype == np.float32 and params["b"].dtype == np.float32
    assert not params["b"].any()


def test_conv_default_init_is_he_normal():
    _, params = Conv(64, 3).init(0, (-1, 32, 8, 8))
    # 18432 samples: the sample std is within ~1% of the He std √(2/fan_in).
    assert float(params["W"].std()) == pytest.approx(np.sqrt(2.0 / (32 * 3 * 3)), rel=0.03)
    _, again = Conv(64, 3).init(0, (-1, 32, 8, 8))
    np.testing.assert_array_equal(params["W"], again["W"])


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_output_shape_matches_init(case):
    layer, params, x = conv_setup(case)
    out_shape, _ = layer.init(0, (-1, *case[0][1:]))
    out, _ = layer.forward(params, x)
    assert out.shape == (case[0][0], *out_shape[1:])


def test_pool_init_shapes():
    assert MaxPool(2).init(0, (-1, 3, 8, 6)) == ((-1, 3, 4, 3), ())
    assert AvgPool(3, 2, 1).init(0, (5, 2, 7, 9)) == ((5, 2, 4, 5), ())
    assert MaxPool((2, 3), (1, 3)).init(None, (-1, 1, 4, 6)) == ((-1, 1, 3, 2), ())


def test_conv_without_bias():
    layer = Conv(2, 3, bias=False)
    _, params = layer.init(0, (-1, 1, 5, 5), np.float64)
    assert set(params) == {"W"}
    x = np.random.default_rng(0).standard_normal((2, 1, 5, 5))
    dparams, _ = layer.backward(layer.forward(params, x)[1], np.ones((2, 2, 3, 3)))
    assert set(dparams) == {"W"}
    check_layer(layer, params, x)


def test_names():
    assert Conv(30, 5).name == "Conv(30, 5)"
    assert Conv(8, (3, 1), stride=2, padding=1).name == "Conv(8, (3, 1), stride=2, padding=1)"
    assert MaxPool(2).name == "MaxPool(2)"
    assert AvgPool(3, 1, 1, name="avg").name == "avg"


def test_in_pipeline():
    from funcnet.layers import Dense, Flatten, Relu

    net = pipeline(Conv(4, 3, padding=1), Relu(), MaxPool(2), Flatten(), Dense(5))
    out_shape, params = net.init(0, (-1, 1, 8, 8))
    assert out_shape == (-1, 5)
    x = np.random.default_rng(0).standard_normal((3, 1, 8, 8)).astype(np.float32)
    out, cache = net.forward(params, x)
    dparams, dx = net.backward(cache, np.ones_like(out))
    assert out.shape == (3, 5) and dx.shape == x.shape
    assert dparams[0]["W"].shape == (4, 1, 3, 3)


# --------------------------------------------------------------------------- forward vs lax


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_forward_matches_lax(case):
    layer, params, x = conv_setup(case)
    out, _ = layer.forward(params, x)
    ref = lax_conv(x, params["W"], params["b"], case[3], case[4])
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", [MaxPool, AvgPool])
@pytest.mark.parametrize("case", POOL_CASES)
def test_pool_forward_matches_reduce_window(kind, case):
    x = np.random.default_rng(2).standard_normal(case[0])
    out, _ = pool_layer(kind, case).forward((), x)
    np.testing.assert_allclose(out, lax_pool(kind, x, *case[1:]), rtol=1e-12, atol=1e-15)


# --------------------------------------------------------------------------- backward vs jax.vjp


@pytest.mark.parametrize("case", CONV_GRAD_CASES)
def test_conv_backward_matches_jax(case):
    layer, params, x = conv_setup(case)
    report = check_layer(layer, params, x)
    # The gradients, then the parameter gradients of need_dx=False (the training mode).
    assert [r.what for r in report.rows if r.versus == "jax"] == [
        "forward", "params.W", "params.b", "x", "params.W (need_dx=False)",
        "params.b (need_dx=False)",
    ]  # fmt: skip


# Batch 3, strides 1-2, paddings 0-2, both dx formulations.
CHUNKED_CASES = [((3, *c[0][1:]), *c[1:]) for c in CONV_GRAD_CASES[::2] + CONV_GRAD_CASES[-1:]]


def sample_bytes(layer, params, x, case) -> int:
    """Bytes of one sample's im2col on NumPy (wide rows at stride 1)."""
    cfg = {"kernel": pair(case[2]), "stride": pair(case[3]), "padding": pair(case[4])}
    out_hw = layer.init(0, x.shape)[0][2:]
    return numpy_kernels._gather(x.shape, params["W"], out_hw=out_hw, **cfg).sample_bytes


@pytest.mark.parametrize("samples", [1, 2])
@pytest.mark.parametrize("case", CHUNKED_CASES)
def test_conv_in_chunks_matches_lax_and_jax(monkeypatch, case, samples):
    """A budget of one or two samples' im2col: batches of 3 go in chunks (the last one
    short); the NumPy forward, backward and need_dx=False still match the references."""
    _, params, x = conv_setup(case)
    one = sample_bytes(conv_layer(case), params, x, case)
    assert len(numpy_kernels.chunks(3, one)) == 1  # the default budget: one chunk
    budget = samples * one + one // 2
    assert len(numpy_kernels.chunks(3, one, budget)) == 4 - samples
    layer = conv_layer(case, chunk_bytes=budget)
    real_chunks, seen = numpy_kernels.chunks, []

    def chunks(n, sample_bytes, chunk_bytes):
        seen.append(chunk_bytes)
        return real_chunks(n, sample_bytes, chunk_bytes)

    monkeypatch.setattr(numpy_kernels, "chunks", chunks)
    out, cache = layer.forward(params, x)
    assert seen == [budget]  # the layer's budget reaches the kernel
    assert cache[1] is None  # NumPy keeps x only
    ref = lax_conv(x, params["W"], params["b"], *case[3:])
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
    check_layer(layer, params, x)  # NumPy in chunks against jax.vjp of the JAX forward
    dparams, _ = layer.backward(cache, np.ones_like(out))
    only, none = layer.backward(cache, np.ones_like(out), need_dx=False)
    assert none is None
    assert_trees_close(only, dparams, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("layer", "channels"),
    [
        (Conv(4, 3, padding=1), DX_AS_CONV_MIN_CHANNELS),  # dx as a convolution
        (Conv(4, 3, stride=2, padding=1), DX_AS_CONV_MIN_CHANNELS),  # ... in phases
        (Conv(4, 3), 2),  # dx by col2im
        (MaxPool(7), 2),  # windows that tile the input
        (AvgPool(3, 1, 1), 2),
    ],
)
def test_an_empty_batch_gives_empty_results(layer, channels):
    out_shape, params = layer.init(0, (0, channels, 7, 7), np.float64)
    x = np.zeros((0, channels, 7, 7))
    out, cache = layer.forward(params, x)
    dparams, dx = layer.backward(cache, np.zeros(out.shape))
    assert out.shape == out_shape and dx.shape == x.shape
    for g in jax.tree_util.tree_leaves(dparams):
        assert not np.asarray(g).any()


def test_chunks_cover_the_batch_within_the_budget():
    chunks = numpy_kernels.chunks
    assert chunks(7, 300, 1000) == [slice(0, 3), slice(3, 6), slice(6, 7)]
    assert chunks(2, 5000, 1000) == [slice(0, 1), slice(1, 2)]  # at least one sample
    assert chunks(0, 300, 1000) == [slice(0, 0)]


@pytest.mark.parametrize("case", CONV_GRAD_CASES)
def test_conv_backward_on_jax_arrays_matches_jax(case):
    """JAX arrays take the reference kernels: the hand-written backward run on them."""
    layer, params, x = conv_setup(case)
    check_layer(layer, params, x, arrays="jax", numerical=False)


# Strides 1-2 on each axis, rectangular kernels, padding above k - 1, a stride above the
# kernel: each compiles several programs, so only these.
XLA_CASES = [CONV_GRAD_CASES[i] for i in (3, 5, 7)] + DX_EDGE_CASES[:2]
# Padding above (k - 1) / 2 at stride 2: the weight gradient pads x first (dy dilated).
XLA_CASES.append(((2, 8, 5, 5), 3, 3, 2, 2))


@pytest.mark.parametrize("channels_last", [True, False], ids=["NHWC", "NCHW"])
@pytest.mark.parametrize("case", XLA_CASES)
def test_xla_algorithm_matches_jax_and_im2col(case, channels_last, monkeypatch):
    """``algorithm="xla"``: lax.conv forward, the backward written as two convolutions.
    Checked against jax.vjp of that forward, and against the im2col kernels, in both of its
    formulations: channels-last (the CPU's) and NCHW (a GPU's, compiled here on the CPU)."""
    monkeypatch.setattr(xla, "_channels_last", lambda: channels_last)
    _, params, x = conv_setup(case)
    _, f, k, s, p = case
    layer = Conv(f, k, stride=s, padding=p, algorithm="xla")
    check_layer(layer, params, x, arrays="jax", numerical=False)
    reference = Conv(f, k, stride=s, padding=p, algorithm="im2col")
    jparams, jx = jax.tree_util.tree_map(jnp.asarray, params), jnp.asarray(x)
    out, cache = layer.forward(jparams, jx)
    ref_out, ref_cache = reference.forward(jparams, jx)
    assert cache[1] is None and ref_cache[1] is not None  # XLA keeps no cols
    g = jnp.asarray(np.random.default_rng(5).standard_normal(out.shape))
    assert_trees_close((out, layer.backward(cache, g)), (ref_out, reference.backward(ref_cache, g)))
    dparams, none = layer.backward(cache, g, need_dx=False)
    assert none is None
    assert_trees_close(dparams, layer.backward(cache, g)[0], rtol=0, atol=0)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's convolution kernels")
def test_xla_convolutions_in_a_scan_run_channels_last(xla_optimized):
    """Inside a loop body XLA:CPU runs only NHWC/HWIO convolutions through its Eigen kernels
    (others as plain loops, many times slower; it transposes them itself only at the top of
    a program): every convolution of a scanned step must already be channels-last."""
    case = XLA_CASES[0]
    _, params, x = conv_setup(case)
    _, f, k, s, p = case
    layer = Conv(f, k, stride=s, padding=p, algorithm="xla")
    # Float32: XLA:CPU has Eigen convolutions for f16 and f32 only.
    params, x = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), (params, x))

    def body(weights, xi):
        out, cache = layer.forward(weights, xi)
        grads, dx = layer.backward(cache, out)
        return jax.tree_util.tree_map(lambda a, d: a - d, weights, grads), dx.sum()

    scan = jax.jit(lambda p, xs: jax.lax.scan(body, p, xs))
    hlo = scan.lower(params, jnp.stack([x, x])).compile().as_text()
    convs = re.findall(r"convolution\([^\n]*dim_labels=(\S+?)[,\s]", hlo)
    assert len(convs) == 3, hlo  # y, dW, dx
    assert set(convs) == {"b01f_01io->b01f"}, convs


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's convolution kernels")
def test_xla_weight_gradient_takes_excess_padding_as_zeros(xla_optimized):
    """XLA:CPU ran the weight gradient's convolution 10-15x slower with more padding than
    (k - 1) / 2 (DeepConvNet's 3x3 conv with padding 2: docs/conv.md), so x takes the
    excess as explicit zeros and that convolution pads by at most (k - 1) / 2 per axis.
    The values are checked against jax.vjp with the other XLA cases (XLA_CASES)."""
    layer = Conv(4, (3, 5), padding=(2, 3), algorithm="xla")
    params = layer.init(0, (2, 8, 6, 7))[1]
    x = np.random.default_rng(0).standard_normal((2, 8, 6, 7))
    params, x = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), (params, x))

    def forward_backward(p, x):
        out, cache = layer.forward(p, x)
        return layer.backward(cache, out)

    hlo = jax.jit(forward_backward).lower(params, x).compile().as_text()
    windows = re.findall(r"convolution\([^\n]*window=\{size=(\d+x\d+)(?: pad=(\S+?))?[,}]", hlo)
    pads = dict(windows)
    assert len(windows) == 3 and set(pads) == {"3x5", "8x9"}, windows  # y and dx; dW
    assert pads["8x9"] == "1_1x2_2", windows  # (2, 3) less the excess (1, 1)


def test_auto_algorithm_follows_the_backend_and_the_shape(monkeypatch):
    c = conv.XLA_MIN_CHANNELS
    # The CPU: XLA's from c input channels on, at any batch and image size; im2col below.
    assert conv.jax_algorithm("auto", (1, c, 9, 9)) == "xla"
    assert conv.jax_algorithm("auto", (10**4, c, 64, 64)) == "xla"
    assert conv.jax_algorithm("auto", (1, c - 1, 9, 9)) == "im2col"
    assert conv.jax_algorithm("im2col", (1, c, 9, 9)) == "im2col"
    small, big = ((2, c, 5, 5), 3, 3, 1, 1), ((2, c - 1, 5, 5), 3, 3, 1, 1)
    for case, kept in ((small, False), (big, True)):  # im2col keeps cols for its backward
        layer, params, x = conv_setup(case)
        params, x = jax.tree_util.tree_map(jnp.asarray, params), jnp.asarray(x)
        assert (layer.forward(params, x)[1][1] is not None) == kept
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert conv.jax_algorithm("auto", (10**6, 1, 9, 9)) == "xla"
    assert layer.forward(params, x)[1][1] is None  # the same layer: XLA's on a GPU
    assert Conv(3, 3, algorithm="xla").name == "Conv(3, 3, algorithm='xla')"
    with pytest.raises(ValueError, match=r"Conv\(3, 3, algorithm='cudnn'\): algorithm must be"):
        Conv(3, 3, algorithm="cudnn")


def test_numpy_forward_then_jax_dout_gathers_cols():
    """NumPy keeps no cols; a JAX dout on that cache takes the reference, which gathers them."""
    layer, params, x = conv_setup(CONV_CASES[3])
    out, cache = layer.forward(params, x)
    g = np.random.default_rng(6).standard_normal(out.shape)
    assert_trees_close(layer.backward(cache, jnp.asarray(g)), layer.backward(cache, g))


@pytest.mark.parametrize("kind", [MaxPool, AvgPool])
@pytest.mark.parametrize("case", POOL_GRAD_CASES)
def test_pool_backward_on_jax_arrays_matches_jax(kind, case):
    x = distinct(np.random.default_rng(3), case[0])
    check_layer(pool_layer(kind, case), (), x, arrays="jax", numerical=False)


@pytest.mark.parametrize("budget", [None, 1])
@pytest.mark.parametrize("case", CONV_CASES + DX_EDGE_CASES)
def test_fast_numpy_kernels_equal_the_reference_im2col(case, budget):
    """The teaching kernels of ``conv`` run on NumPy too: the fast ones must agree, whole
    and in chunks, with both dx formulations."""
    chunked = {} if budget is None else {"chunk_bytes": budget}
    layer, params, x = conv_setup(case)
    W, b = params["W"], params["b"]
    cfg = {"kernel": pair(case[2]), "stride": pair(case[3]), "padding": pair(case[4])}
    out_hw = layer.init(0, x.shape)[0][2:]
    ref_out, cols = conv.conv_forward(x, W, b, out_hw=out_hw, **cfg)
    out = numpy_kernels.conv_forward(x, W, b, out_hw=out_hw, **cfg, **chunked)
    np.testing.assert_allclose(out, ref_out, rtol=1e-12, atol=1e-12)
    dout = np.random.default_rng(7).standard_normal(out.shape)
    opts = dict(in_hw=x.shape[2:], bias=True, need_dx=True, **cfg)
    expect = conv.conv_backward(cols, W, dout, **opts)
    got = numpy_kernels.conv_backward(x, W, dout, **opts, **chunked)
    for a, r in zip(got, expect, strict=True):
        np.testing.assert_allclose(a, r, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", POOL_CASES)
def test_fast_numpy_pool_kernels_equal_the_reference(case):
    shape, size, stride, padding = case
    kernel = pair(size)
    cfg = {"kernel": kernel, "stride": kernel if stride is None else pair(stride),
           "padding": pair(padding)}  # fmt: skip
    rng = np.random.default_rng(2)
    x = rng.integers(-2, 3, shape).astype(np.float64)  # ties in most windows
    out_hw = MaxPool(size, stride, padding).init(0, shape)[0][2:]
    best, arg = conv.maxpool_forward(x, out_hw=out_hw, **cfg)
    fbest, (farg,) = numpy_kernels.maxpool_forward(x, out_hw=out_hw, **cfg)
    np.testing.assert_array_equal(fbest, best)
    np.testing.assert_array_equal(farg, arg)
    dout = rng.standard_normal(best.shape)
    dout.reshape(-1)[::3] = np.inf  # the non-finite route too
    for d in (np.where(np.isinf(dout), 1.0, dout), dout):
        np.testing.assert_array_equal(
            numpy_kernels.maxpool_backward(arg, d, in_hw=shape[2:], **cfg),
            conv.maxpool_backward(arg, d, in_hw=shape[2:], **cfg),
        )
    finite = rng.standard_normal(best.shape)
    np.testing.assert_allclose(
        numpy_kernels.avgpool_backward(finite, in_hw=shape[2:], **cfg),
        conv.avgpool_backward(finite, in_hw=shape[2:], **cfg),
        rtol=1e-13,
        atol=1e-15,
    )


@pytest.mark.parametrize("case", [POOL_CASES[0], POOL_CASES[1]])  # tiled, overlapping
def test_fast_maxpool_takes_nan_like_the_reference(case):
    """NumPy's maximum would let a NaN win anywhere; the reference's strict ">" lets it win
    only at a window's first offset.  The fast kernel must give the reference's answer."""
    shape, size, stride, padding = case
    kernel = pair(size)
    cfg = {"kernel": kernel, "stride": kernel if stride is None else pair(stride),
           "padding": pair(padding)}  # fmt: skip
    x = np.random.default_rng(8).standard_normal(shape)
    x.reshape(-1)[::5] = np.nan
    out_hw = MaxPool(size, stride, padding).init(0, shape)[0][2:]
    best, arg = conv.maxpool_forward(x, out_hw=out_hw, **cfg)
    fbest, (farg,) = numpy_kernels.maxpool_forward(x, out_hw=out_hw, **cfg)
    np.testing.assert_array_equal(fbest, best)
    np.testing.assert_array_equal(farg, arg)


@pytest.mark.parametrize("kind", [MaxPool, AvgPool])
@pytest.mark.parametrize("case", POOL_GRAD_CASES)
def test_pool_backward_matches_jax(kind, case):
    x = distinct(np.random.default_rng(3), case[0])
    check_layer(pool_layer(kind, case), (), x)


@pytest.mark.parametrize(
    ("layer", "params_of", "factors"),
    [
        (Conv(3, 3, stride=2, padding=1), True, {"dx_factor": 1 + 1e-3}),
        (Conv(3, 3, stride=2, padding=1), True, {"dW_factor": 1 + 1e-3}),
        (MaxPool(3, 2, 1), False, {"dx_factor": 1 + 1e-3}),
        (AvgPool(3, 2, 1), False, {"dx_factor": 1 + 1e-3}),
    ],
)
def test_perturbed_backward_fails(layer, params_of, factors):
    params = layer.init(0, (-1, 2, 7, 7), np.float64)[1] if params_of else ()
    x = distinct(np.random.default_rng(4), (2, 2, 7, 7))
    check_layer(layer, params, x)
    with pytest.raises(GradcheckError):
        check_layer(perturbed(layer, **factors), params, x)


@pytest.mark.parametrize("factors", [{"dx_factor": 1 + 1e-3}, {"dW_factor": 1 + 1e-3}])
def test_perturbed_backward_fails_in_chunks_and_as_conv(factors):
    """The same sensitivity where dx is a convolution of dy and cols come in chunks."""
    layer = Conv(3, 3, stride=2, padding=1, chunk_bytes=1)  # one sample per chunk
    params = layer.init(0, (-1, DX_AS_CONV_MIN_CHANNELS, 7, 7), np.float64)[1]
    x = np.random.default_rng(4).standard_normal((3, DX_AS_CONV_MIN_CHANNELS, 7, 7))
    check_layer(layer, params, x)
    with pytest.raises(GradcheckError):
        check_layer(perturbed(layer, **factors), params, x)


def test_to_jax_grad_matches_lax():
    case = ((2, 2, 7, 9), 3, 3, 2, 1)
    layer, params, x = conv_setup(case)
    apply = to_jax(layer)

    def loss_hand(p, x):
        return jnp.sum(jnp.sin(apply(p, x)))

    def loss_lax(p, x):
        return jnp.sum(jnp.sin(lax_conv(x, p["W"], p["b"], 2, 1)))

    got = jax.jit(jax.grad(loss_hand, argnums=(0, 1)))(params, x)
    assert_trees_close(got, jax.grad(loss_lax, argnums=(0, 1))(params, x))


# --------------------------------------------------------------------------- NumPy, JAX, jit


def all_layers():
    # Strided (zero-interleaving) and stride-1 col2im on the JAX path, with padding.
    layer, params, _ = conv_setup(((2, 2, 7, 9), 3, 3, 2, 1))
    return [
        pytest.param(layer, params, id="conv-stride2-pad1"),
        pytest.param(MaxPool(3, 1, 1), (), id="maxpool-stride1-pad1"),
        pytest.param(AvgPool(3, 2, 1), (), id="avgpool-stride2-pad1"),
    ]


@pytest.mark.parametrize(("layer", "params"), all_layers())
def test_numpy_jax_and_jit_agree(layer, params):
    x = distinct(np.random.default_rng(5), (2, 2, 7, 9))
    out, cache = layer.forward(params, x)
    g = np.random.default_rng(6).standard_normal(out.shape)
    dparams, dx = layer.backward(cache, g)

    jout, jcache = layer.forward(jax.tree_util.tree_map(jnp.asarray, params), jnp.asarray(x))
    jdparams, jdx = layer.backward(jcache, jnp.asarray(g))
    assert isinstance(jout, jax.Array) and isinstance(jdx, jax.Array)
    assert_trees_close((jout, jdparams, jdx), (out, dparams, dx))

    @jax.jit
    def both(params, x, g):
        out, cache = layer.forward(params, x)
        return (out, *layer.backward(cache, g))

    assert_trees_close(both(params, x, g), (out, dparams, dx))


@pytest.mark.parametrize(("layer", "params"), all_layers())
def test_need_dx_false(layer, params):
    x = np.random.default_rng(7).standard_normal((2, 2, 7, 9))
    out, cache = layer.forward(params, x)
    dparams, dx = layer.backward(cache, np.ones_like(out))
    dparams_only, none = layer.backward(cache, np.ones_like(out), need_dx=False)
    assert none is None and dx is not None
    assert_trees_close(dparams_only, dparams, rtol=0, atol=0)


@pytest.mark.parametrize("xp", [np, jnp], ids=["numpy", "jax"])
@pytest.mark.parametrize(
    "layer", [Conv(3, 3, stride=2, padding=1), MaxPool(3, 2, 1), AvgPool(3, 2, 1)], ids=str
)
def test_float32_kept(xp, layer):
    _, params = layer.init(0, (-1, 2, 7, 9), np.float32)
    params = jax.tree_util.tree_map(xp.asarray, params)
    x = xp.asarray(np.random.default_rng(8).standard_normal((2, 2, 7, 9)), dtype=np.float32)
    out, cache = layer.forward(params, x)
    dparams, dx = layer.backward(cache, xp.ones_like(out))
    for a in [out, dx, *jax.tree_util.tree_leaves(dparams)]:
        assert a.dtype == np.float32


# --------------------------------------------------------------------------- max-pool ties


def test_maxpool_tie_goes_to_first_in_row_major_order():
    x = np.array([[3.0, 1.0, 2.0, 5.0], [3.0, 3.0, 5.0, 5.0]]).reshape(1, 1, 2, 4)
    out, cache = MaxPool(2).forward((), x)
    np.testing.assert_array_equal(out, [[[[3.0, 5.0]]]])
    _, dx = MaxPool(2).backward(cache, np.array([[[[10.0, 20.0]]]]))
    expected = np.array([[10.0, 0.0, 0.0, 20.0], [0.0, 0.0, 0.0, 0.0]]).reshape(1, 1, 2, 4)
    np.testing.assert_array_equal(dx, expected)


def test_maxpool_ties_with_overlapping_windows_accumulate():
    # 3 equal maxima; stride-1 windows overlap, each sends its gradient to its first maximum.
    x = np.array([[0.0, 7.0, 7.0], [7.0, 0.0, 0.0]]).reshape(1, 1, 2, 3)
    layer = MaxPool(2, 1)
    out, cache = layer.forward((), x)
    np.testing.assert_array_equal(out, [[[[7.0, 7.0]]]])
    _, dx = layer.backward(cache, np.array([[[[1.0, 2.0]]]]))
    # window (0,0) covers x[0,0:2], x[1,0:2]: first max is x[0,1]
    # window (0,1) covers x[0,1:3], x[1,1:3]: first max is x[0,1] again
    np.testing.assert_array_equal(dx, np.array([[0.0, 3.0, 0.0], [0.0, 0.0, 0.0]]).reshape(x.shape))

    # The JAX path, eager and jitted, routes ties the same way.
    def dx_of(x, g):
        return layer.backward(layer.forward((), x)[1], g)[1]

    ones = np.ones((1, 1, 1, 2))
    expected = np.array([[0.0, 2.0, 0.0], [0.0, 0.0, 0.0]]).reshape(x.shape)
    np.testing.assert_array_equal(np.asarray(dx_of(jnp.asarray(x), jnp.asarray(ones))), expected)
    np.testing.assert_array_equal(np.asarray(jax.jit(dx_of)(x, ones)), expected)


@pytest.mark.parametrize("args", [(2, None, 0), (3, 1, 1), ((2, 3), (2, 1), (1, 0))], ids=str)
def test_maxpool_ties_agree_with_jax_vjp(args):
    # Values in {0, 1, 2}: most windows hold ties.  The NumPy path (stacked windows) and
    # jax.vjp of the JAX forward (a chain of strict ">" selections) must route alike.
    layer = MaxPool(*args)
    x = np.random.default_rng(11).integers(0, 3, (2, 2, 6, 8)).astype(np.float64)
    out, cache = layer.forward((), x)
    g = np.random.default_rng(12).standard_normal(out.shape)
    _, dx = layer.backward(cache, g)
    ref_out, vjp = jax.vjp(lambda x: layer.forward((), x)[0], jnp.asarray(x))
    np.testing.assert_array_equal(out, ref_out)
    # Overlapping windows sum in a different order; a misrouted gradient would be O(1) off.
    np.testing.assert_allclose(dx, vjp(jnp.asarray(g))[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(out, lax_pool(MaxPool, x, *args))


def test_maxpool_padding_never_wins():
    x = -1.0 - np.random.default_rng(9).random((1, 2, 4, 4))
    layer = MaxPool(3, 1, 1)
    out, cache = layer.forward((), x)
    assert (out < -1.0).all()
    g = np.random.default_rng(10).standard_normal(out.shape)
    _, dx = layer.backward(cache, g)
    np.testing.assert_allclose(dx.sum(), g.sum())


def test_maxpool_infinite_dout_stays_in_the_winner():
    x = np.array([1.0, 4.0, 2.0, 3.0]).reshape(1, 1, 2, 2)
    _, cache = MaxPool(2).forward((), x)
    for xp in (np, jnp):
        _, dx = MaxPool(2).backward(cache, xp.full((1, 1, 1, 1), np.inf))
        np.testing.assert_array_equal(np.asarray(dx).ravel(), [0.0, np.inf, 0.0, 0.0])


def test_avgpool_counts_padding():
    x = np.ones((1, 1, 2, 2))
    out, cache = AvgPool(2, 2, 1).forward((), x)
    np.testing.assert_allclose(out, np.full((1, 1, 2, 2), 0.25))
    _, dx = AvgPool(2, 2, 1).backward(cache, np.ones((1, 1, 2, 2)))
    np.testing.assert_allclose(dx, np.full((1, 1, 2, 2), 0.25))


# --------------------------------------------------------------------------- errors


def conv_params():
    return Conv(3, 3).init(0, (-1, 2, 8, 8))[1]


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Conv(0, 3), r"Conv\(0, 3\): out_channels must be a positive int, got 0"),
        (lambda: Conv(2, 0), r"kernel_size must be >= 1, got 0"),
        (lambda: Conv(2, (3, 3, 3)), r"kernel_size must be an int or a pair of ints"),
        (lambda: Conv(2, 3, stride=0), r"stride must be >= 1"),
        (lambda: Conv(2, 3, padding=-1), r"padding must be >= 0"),
        (lambda: Conv(2, 3.0), r"kernel_size must be an int or a pair"),
        (lambda: Conv(2, 3, chunk_bytes=0), r"Conv\(2, 3\): chunk_bytes must be a positive int"),
        (
            lambda: MaxPool(2, padding=2),
            r"MaxPool\(2, padding=2\): padding \(2, 2\) must be smaller",
        ),
        (lambda: AvgPool((3, 1), padding=1), r"padding \(1, 1\) must be smaller than the window"),
    ],
)
def test_constructor_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    ("layer", "in_shape", "match"),
    [
        (
            Conv(2, 5),
            (-1, 1, 3, 8),
            r"Conv\(2, 5\): kernel 5x5 is larger than the padded input 3x8",
        ),
        (Conv(2, 5, padding=1), (-1, 1, 2, 8), r"padded input 4x10 \(input 2x8, padding 1,1\)"),
        (
            Conv(2, 3, stride=2),
            (-1, 1, 8, 9),
            r"input height 8 does not tile: \(8 \+ 2·0 − 3\) = 5 is not divisible by stride 2",
        ),
        (MaxPool(2), (-1, 1, 4, 7), r"MaxPool\(2\): input width 7 does not tile"),
        (Conv(2, 3), (-1, 8, 8), r"expected an input shape \(N, C, H, W\), got \(N, 8, 8\)"),
        (AvgPool(2), (-1, 0, 4, 4), r"expected an input shape \(N, C, H, W\)"),
    ],
)
def test_init_errors(layer, in_shape, match):
    with pytest.raises(ValueError, match=match):
        layer.init(0, in_shape)


def test_conv_forward_errors():
    layer, params = Conv(3, 3), conv_params()
    x = np.zeros((2, 2, 8, 8), np.float32)
    with pytest.raises(
        ValueError, match=r"Conv\(3, 3\): input has 1 channels but W \(3, 2, 3, 3\)"
    ):
        layer.forward(params, x[:, :1])
    with pytest.raises(
        ValueError, match=r"expected a 4-D input \(N, C, H, W\), got shape \(2, 8, 8\)"
    ):
        layer.forward(params, x[0])
    with pytest.raises(ValueError, match=r"kernel 3x3 is larger than the padded input 2x8"):
        layer.forward(params, x[:, :, :2])
    with pytest.raises(ValueError, match=r"not divisible by stride 2"):
        Conv(3, 3, stride=2).forward(params, x)
    with pytest.raises(TypeError, match=r"input dtype float64 does not match the params dtype"):
        layer.forward(params, x.astype(np.float64))
    with pytest.raises(TypeError, match=r"expected a floating-point input"):
        layer.forward(params, x.astype(np.int32))
    with pytest.raises(
        ValueError, match=r"expected W of shape \(4, C_in, 3, 3\), got \(3, 2, 3, 3\)"
    ):
        Conv(4, 3).forward(params, x)
    with pytest.raises(ValueError, match=r"expected W of shape \(3, C_in, 5, 5\)"):
        Conv(3, 5).forward(params, x)
    with pytest.raises(ValueError, match=r"expected params with keys \['W'\], got \['W', 'b'\]"):
        Conv(3, 3, bias=False).forward(params, x)
    with pytest.raises(ValueError, match=r"expected b of shape \(3,\), got \(4,\)"):
        layer.forward({**params, "b": np.zeros(4, np.float32)}, x)
    with pytest.raises(TypeError, match=r"b dtype float64 does not match"):
        layer.forward({**params, "b": np.zeros(3)}, x)


@pytest.mark.parametrize(
    ("layer", "params"),
    [(Conv(3, 3), conv_params()), (MaxPool(2), ()), (AvgPool(2), ())],
    ids=["conv", "maxpool", "avgpool"],
)
def test_backward_dout_shape_error(layer, params):
    x = np.zeros((2, 2, 8, 8), np.float32)
    out, cache = layer.forward(params, x)
    bad = np.zeros((2, *out.shape[1:-1], out.shape[-1] + 1), np.float32)
    with pytest.raises(ValueError, match=re.escape(f"{layer.name}: backward expected dout")):
        layer.backward(cache, bad)


def test_pool_forward_errors():
    with pytest.raises(ValueError, match=r"MaxPool\(2\): takes no params"):
        MaxPool(2).forward({"W": 1}, np.zeros((1, 1, 4, 4)))
    with pytest.raises(ValueError, match=r"AvgPool\(2\): expected a 4-D input"):
        AvgPool(2).forward((), np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"AvgPool\(2\): input height 5 does not tile"):
        AvgPool(2).forward((), np.zeros((1, 1, 5, 4)))
    with pytest.raises(TypeError, match=r"MaxPool\(3\): expected a floating-point input"):
        MaxPool(3).forward((), np.zeros((1, 1, 6, 6), np.int64))
