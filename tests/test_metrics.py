import keras
import numpy as np
import pytest

import kbnn
from kbnn.metrics import FlipRatio


def test_flip_ratio_as_larq_counts_it():
    m = FlipRatio()
    m.update_state([1, 1])
    assert float(m.result()) == 0.0
    m.update_state([2, 2])
    assert float(m.result()) == 1.0
    m.update_state([1, 2])
    assert float(m.result()) == 0.75
    m.reset_state()  # keeps the last values: the next update counts its flips
    assert float(m.result()) == 0.0
    m.update_state([1, 1])
    assert float(m.result()) == 0.5
    m.update_state([-1, 1])
    assert float(m.result()) == 0.5
    assert FlipRatio.from_config(m.get_config()).values_dtype == "int8"


def test_kernel_flip_ratio_is_logged_by_fit():
    keras.utils.set_random_seed(0)
    with kbnn.context.metrics_scope(["flip_ratio"]):
        layer = kbnn.layers.QuantDense(4, kernel_quantizer="ste_sign", use_bias=False)
    model = keras.Sequential([keras.Input((5,)), layer])
    model.compile(keras.optimizers.SGD(1.0), "mse")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 5)), rng.normal(size=(16, 4))
    k0 = np.sign(layer.kernel.numpy())
    first = model.fit(x, y, batch_size=16, epochs=1, verbose=0)  # one step: nothing to compare
    k1 = np.sign(layer.kernel.numpy())
    second = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    name = f"flip_ratio/{layer.kernel_quantizer.name}"
    assert first.history[name] == [0.0]
    # The second fit's step quantized k1; the metric remembered k0 from the first.
    assert np.mean(k1 != k0) > 0  # a large step flips some weights
    assert second.history[name][0] == pytest.approx(np.mean(k1 != k0))
    restored = kbnn.quantizers.get(kbnn.quantizers.serialize(layer.kernel_quantizer))
    assert restored.training_metrics == ["flip_ratio"]


def test_unknown_metrics_are_refused():
    with pytest.raises(ValueError, match="Unknown training metric 'flips'"):
        with kbnn.context.metrics_scope(["flips"]):
            pass
    with pytest.raises(ValueError, match="Unknown quantizer metric 'flips'"):
        kbnn.quantizers.SteSign(metrics=["flips"])
