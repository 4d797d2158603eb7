"""Per-layer timing: wrapped layers compute what the plain ones do, and every layer is timed."""

import jax
import numpy as np
import pytest

from funcnet import models, plot, profile


def test_timed_layers_change_nothing_but_record_every_call():
    timer = profile.Timer()
    plain, timed = models.simple_convnet(4, 3, 8), models.simple_convnet(4, 3, 8, wrap=timer.wrap)
    _, params = plain.init(0, (-1, 1, 8, 8))
    x = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)
    (a, ca), (b, cb) = plain.forward(params, x), timed.forward(params, x)
    np.testing.assert_array_equal(a, b)
    dout = np.ones_like(a)
    jax.tree.map(np.testing.assert_array_equal, plain.backward(ca, dout), timed.backward(cb, dout))
    assert timer.names == ["Conv(4, 3)", "Relu", "MaxPool(2)", "Flatten", "Dense(8)", "Relu",
                           "Dense(10)"]  # fmt: skip
    assert all(len(r["forward"]) == 1 and len(r["backward"]) == 1 for r in timer.times)


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_profile_times_every_layer_of_the_pipeline(backend):
    times = profile.profile(
        lambda wrap: models.multilayer_net((6, 5), dropout=0.2, batchnorm=True, wrap=wrap),
        (7,), batch=4, backend=backend, repeats=2,
    )  # fmt: skip
    assert [t.name for t in times][:4] == ["Dense(6)", "BatchNorm", "Relu", "Dropout(0.2)"]
    assert len(times) == 9 and all(t.forward > 0 and t.backward > 0 for t in times)
    chart = plot.bars([t.name for t in times], {"forward": [t.forward for t in times],
                      "backward": [t.backward for t in times]}, width=60, color=False)  # fmt: skip
    assert chart.splitlines()[-1].split() == ["•", "forward", "x", "backward"]
    with pytest.raises(ValueError, match="backend must be"):
        profile.profile(models.two_layer_net, (4,), backend="torch")
