"""Training under Keras mixed-precision policies works with every quantizer and layer."""

import keras
import numpy as np
import pytest

import kbnn
from kbnn import quantizers as q

QUANTIZERS = ["ste_sign", "stochastic_sign", "approx_sign", "swish_sign",
              "magnitude_aware_sign", "ste_heaviside", "ste_tern", "dorefa_quantizer"]


@pytest.fixture(params=["mixed_float16", "mixed_bfloat16"])
def policy(request):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(request.param)
    yield request.param
    keras.config.set_dtype_policy(previous)


def fit_and_check(model, policy):
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 6, 6, 2)), rng.integers(0, 3, 8)
    kernels = [w for w in model.trainable_weights if "kernel" in w.path]
    before = [w.numpy().copy() for w in kernels]
    # Sixteen steps: mixed_float16's loss scaling skips the first steps whose scaled
    # gradients overflow float16 (halving the scale each time).
    history = model.fit(x, y, batch_size=1, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    for w, b in zip(kernels, before):
        assert w.dtype == "float32" and not np.array_equal(w.numpy(), b), w.path
    assert model.layers[1].compute_dtype == policy.split("_")[1]


@pytest.mark.parametrize("name", QUANTIZERS)
def test_every_quantizer_trains_under_the_policy(policy, name):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 2))
    x = kbnn.layers.QuantConv2D(2, 3, padding="same", pad_values=1.0, input_quantizer=name,
                                kernel_quantizer=name)(inputs)
    x = keras.layers.Flatten()(x)
    outputs = kbnn.layers.QuantDense(3, kernel_quantizer=name, dtype="float32")(x)
    fit_and_check(keras.Model(inputs, outputs), policy)


def test_every_layer_trains_under_the_policy(policy):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 2))
    kwargs = dict(input_quantizer="ste_sign")
    x = kbnn.layers.QuantDepthwiseConv2D(3, depthwise_quantizer="ste_sign", **kwargs)(inputs)
    x = kbnn.layers.QuantSeparableConv2D(2, 3, depthwise_quantizer="ste_sign",
                                         pointwise_quantizer="ste_sign", **kwargs)(x)
    x = kbnn.layers.QuantConv2DTranspose(2, 2, kernel_quantizer="ste_sign", **kwargs)(x)
    x = keras.layers.Reshape((3 * 3, 2))(x)
    x = kbnn.layers.QuantConv1D(2, 3, kernel_quantizer="ste_sign", **kwargs)(x)
    x = keras.layers.Flatten()(x)
    outputs = kbnn.layers.QuantDense(3, kernel_quantizer="ste_sign", dtype="float32",
                                     **kwargs)(x)
    fit_and_check(keras.Model(inputs, outputs), policy)


def test_binary_values_are_exact_in_low_precision(policy):
    dtype = policy.split("_")[1]
    x = keras.ops.cast(np.array([-3.0, -1e-3, 0.0, 2e-3, 5.0]), dtype)
    for fn in (q.ste_sign, q.approx_sign, q.ste_heaviside, q.ste_tern):
        y = fn(x)
        assert y.dtype == dtype
        assert set(np.unique(keras.ops.convert_to_numpy(keras.ops.cast(y, "float32")))) <= {
            -1.0, 0.0, 1.0}


def test_swish_sign_gradient_stays_finite_in_float16():
    import tensorflow as tf
    # dy * beta alone overflows float16 here (1.5e5); the gradient itself does not.
    x = tf.constant([-3.0, -2.0, 2.0, 3.0], tf.float16)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = q.swish_sign(x)
    g = tape.gradient(y, x, output_gradients=tf.fill([4], tf.constant(30000.0, tf.float16)))
    bx = 5 * np.float32(x)
    expected = 30000.0 * 5.0 * (2 - bx * np.tanh(bx / 2)) / (1 + np.cosh(bx))
    np.testing.assert_allclose(np.float32(g), expected, rtol=2e-3)
