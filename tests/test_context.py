import threading

import keras
import numpy as np

import kbnn
from kbnn.context import quantized_scope, should_quantize
from kbnn.layers import QuantConv2D, QuantDense, QuantDepthwiseConv2D


def model():
    inputs = keras.Input((5, 5, 2))
    x = QuantConv2D(3, 3, kernel_quantizer="ste_sign")(inputs)
    x = QuantDepthwiseConv2D(3, depthwise_quantizer="magnitude_aware_sign", use_bias=False)(x)
    x = keras.layers.Flatten()(x)
    x = QuantDense(2)(x)  # no quantizer: its kernel stays as it is
    return keras.Model(inputs, x)


def test_get_weights_inside_the_scope_are_the_quantized_kernels():
    m = model()
    latent = m.get_weights()
    with quantized_scope(True):
        quantized = m.get_weights()
        layer_quantized = m.layers[1].get_weights()
    conv, depthwise, dense = m.layers[1], m.layers[2], m.layers[4]
    np.testing.assert_array_equal(quantized[0], np.where(latent[0] >= 0, 1.0, -1.0))
    np.testing.assert_array_equal(quantized[1], latent[1])  # the bias
    np.testing.assert_array_equal(quantized[2], depthwise.quantize_kernel())
    for a, b in zip(quantized[3:], latent[3:]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(layer_quantized[0], quantized[0])
    for a, b in zip(m.get_weights(), latent):  # outside again: latent values
        np.testing.assert_array_equal(a, b)
    assert isinstance(conv.kernel, keras.Variable) and dense.kernel_quantizer is None


def test_set_weights_inside_the_scope_writes_the_latent_variables():
    m = model()
    new = [np.full(w.shape, 0.25, "float32") for w in m.get_weights()]
    with quantized_scope(True):
        m.set_weights(new)
        assert np.all(m.get_weights()[0] == 1.0)
    np.testing.assert_array_equal(m.get_weights()[0], new[0])


def test_scopes_nest_and_are_per_thread():
    seen = []
    with quantized_scope(True):
        with quantized_scope(False):
            assert not should_quantize()
        assert should_quantize()
        thread = threading.Thread(target=lambda: seen.append(should_quantize()))
        thread.start()
        thread.join()
    assert not should_quantize() and seen == [False]


def test_summary_and_training_are_unchanged_inside_the_scope():
    m = model()
    outside = kbnn.summary(m, print_fn=None)
    with quantized_scope(True):
        assert kbnn.summary(m, print_fn=None) == outside
        assert m.count_params() == sum(w.size for w in m.get_weights())
