import keras
import numpy as np
import pytest
import tensorflow as tf

import kbnn
from kbnn.layers import (
    QuantConv1D, QuantConv2D, QuantConv2DTranspose, QuantConv3D, QuantConv3DTranspose, QuantDense,
    QuantDepthwiseConv2D, QuantSeparableConv1D, QuantSeparableConv2D,
)

rng = np.random.default_rng(0)


def sign(x):
    return np.where(x >= 0, 1.0, -1.0).astype("float32")


def test_quant_dense_is_sign_x_times_sign_w():
    x = rng.normal(size=(5, 7)).astype("float32")
    x[0, :3] = 0.0  # exact zeros binarize to +1
    layer = QuantDense(4, input_quantizer="ste_sign", kernel_quantizer="ste_sign")
    y = layer(x).numpy()
    w, b = (v.numpy() for v in layer.weights)
    np.testing.assert_array_equal(y, sign(x) @ sign(w) + b)


def conv2d_reference(x, w, stride=1):
    """'valid' NHWC convolution by loops, float64."""
    n, h, wd, c = x.shape
    kh, kw, _, f = w.shape
    oh, ow = (h - kh) // stride + 1, (wd - kw) // stride + 1
    out = np.zeros((n, oh, ow, f))
    for i in range(oh):
        for j in range(ow):
            patch = x[:, i * stride:i * stride + kh, j * stride:j * stride + kw, :]
            out[:, i, j, :] = np.tensordot(patch, w, axes=([1, 2, 3], [0, 1, 2]))
    return out


def test_quant_conv2d_is_sign_conv():
    x = rng.normal(size=(2, 7, 6, 3)).astype("float32")
    layer = QuantConv2D(4, (3, 2), strides=2, input_quantizer="ste_sign",
                        kernel_quantizer="ste_sign", use_bias=False)
    y = layer(x).numpy()
    expected = conv2d_reference(sign(x), sign(layer.kernel.numpy()), stride=2)
    np.testing.assert_array_equal(y, expected)


def test_quant_depthwise_is_sign_depthwise_conv():
    x = rng.normal(size=(2, 5, 5, 3)).astype("float32")
    layer = QuantDepthwiseConv2D(3, depth_multiplier=2, input_quantizer="ste_sign",
                                 depthwise_quantizer="ste_sign")
    y = layer(x).numpy()
    k = sign(layer.kernel.numpy())  # (3, 3, 3 channels, 2 multiplier)
    expected = np.stack(
        [conv2d_reference(sign(x[..., c:c + 1]), k[:, :, c:c + 1, m:m + 1])[..., 0]
         for c in range(3) for m in range(2)], axis=-1)
    np.testing.assert_array_equal(y, expected + layer.bias.numpy())


@pytest.mark.parametrize("make", [
    lambda: (QuantDense(6, activation="relu"), keras.layers.Dense(6, activation="relu"),
             (3, 4, 5)),
    lambda: (QuantConv2D(4, 3, padding="same", strides=2), keras.layers.Conv2D(
        4, 3, padding="same", strides=2), (2, 9, 9, 3)),
    lambda: (QuantDepthwiseConv2D(3, depth_multiplier=2),
             keras.layers.DepthwiseConv2D(3, depth_multiplier=2), (2, 6, 6, 3)),
    # Positional arguments in the Keras parent's order.
    lambda: (QuantDense(6, "relu", False), keras.layers.Dense(6, "relu", False), (3, 4)),
    lambda: (QuantConv2D(4, 3, 2, "same"), keras.layers.Conv2D(4, 3, 2, "same"), (2, 9, 9, 3)),
    lambda: (QuantDepthwiseConv2D(3, 2, "same", 2),
             keras.layers.DepthwiseConv2D(3, 2, "same", 2), (2, 7, 7, 3)),
])
def test_without_quantizers_equals_keras_parent(make):
    quant, plain, shape = make()
    x = rng.normal(size=shape).astype("float32")
    quant.build(shape)
    plain.build(shape)
    plain.set_weights(quant.get_weights())
    np.testing.assert_array_equal(quant(x), plain(x))
    parent_config = plain.get_config()
    config = quant.get_config()
    for key in parent_config:
        if key != "name":
            assert config[key] == parent_config[key], key


def test_get_config_is_complete_and_round_trips():
    layer = QuantDense(
        3, input_quantizer=kbnn.quantizers.SteSign(clip_value=0.5),
        kernel_quantizer="magnitude_aware_sign", kernel_constraint="weight_clip",
        use_bias=False, activation="tanh")
    clone = QuantDense.from_config(layer.get_config())
    assert clone.input_quantizer.clip_value == 0.5
    assert isinstance(clone.kernel_quantizer, kbnn.quantizers.MagnitudeAwareSign)
    assert isinstance(clone.kernel_constraint, kbnn.constraints.WeightClip)
    assert clone.get_config()["activation"] == "tanh"
    depthwise = QuantDepthwiseConv2D(3, depthwise_quantizer="ste_sign",
                                     depthwise_constraint="weight_clip")
    config = depthwise.get_config()
    assert config["depthwise_quantizer"]["class_name"] == "SteSign"
    assert "kernel_quantizer" not in config
    assert isinstance(QuantDepthwiseConv2D.from_config(config).depthwise_constraint,
                      kbnn.constraints.WeightClip)


def test_stochastic_input_quantizer_follows_training_flag():
    layer = QuantDense(8, input_quantizer=kbnn.quantizers.StochasticSign(seed=1),
                       kernel_quantizer="ste_sign")
    x = np.full((64, 16), 0.1, "float32")  # P(+1) = 0.55
    deterministic = layer(x, training=False).numpy()
    np.testing.assert_array_equal(deterministic, layer(x).numpy())
    np.testing.assert_array_equal(
        deterministic, sign(x) @ sign(layer.kernel.numpy()) + layer.bias.numpy())
    assert not np.array_equal(layer(x, training=True).numpy(), deterministic)


def every_layer_model():
    inputs = keras.Input((10, 10, 2))
    x = QuantConv2D(6, 3, kernel_quantizer="ste_sign", kernel_constraint="weight_clip",
                    use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = QuantDepthwiseConv2D(3, input_quantizer="approx_sign",
                             depthwise_quantizer="magnitude_aware_sign", padding="same")(x)
    x = QuantConv2D(4, 2, input_quantizer=kbnn.quantizers.SwishSign(beta=2.0),
                    kernel_quantizer="ste_heaviside")(x)
    x = keras.layers.Flatten()(x)
    x = QuantDense(12, input_quantizer=kbnn.quantizers.StochasticSign(seed=5),
                   kernel_quantizer="stochastic_sign")(x)
    x = keras.layers.BatchNormalization()(x)
    outputs = QuantDense(3, input_quantizer="ste_sign", kernel_quantizer="ste_sign")(x)
    return keras.Model(inputs, outputs)


def test_keras_file_round_trip(tmp_path):
    model = every_layer_model()
    model.compile("adam", "mse")
    x = rng.normal(size=(16, 10, 10, 2)).astype("float32")
    model.fit(x, rng.normal(size=(16, 3)), epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.models.load_model(path)  # safe_mode=True by default
    np.testing.assert_array_equal(restored.predict(x, verbose=0),
                                  model.predict(x, verbose=0))
    assert [type(l) for l in restored.layers] == [type(l) for l in model.layers]


@pytest.mark.parametrize("make", [
    lambda: (dict(units=5, activation="tanh"), QuantDense, keras.layers.Dense, (3, 2, 4)),
    lambda: (dict(filters=4, kernel_size=3, strides=(1, 2), dilation_rate=1, padding="same",
                  activation="relu"), QuantConv2D, keras.layers.Conv2D, (2, 7, 8, 4)),
    lambda: (dict(filters=4, kernel_size=2, dilation_rate=2, groups=2),
             QuantConv2D, keras.layers.Conv2D, (2, 7, 7, 4)),
    lambda: (dict(filters=3, kernel_size=3, data_format="channels_first"),
             QuantConv2D, keras.layers.Conv2D, (2, 2, 6, 6)),
    lambda: (dict(kernel_size=3, depth_multiplier=2, dilation_rate=2, padding="same"),
             QuantDepthwiseConv2D, keras.layers.DepthwiseConv2D, (2, 7, 7, 3)),
])
def test_quantized_layer_is_its_keras_parent_on_quantized_input_and_kernel(make):
    # Every option of the parent reaches the computation, because the parent's call computes.
    kwargs, quant_cls, parent_cls, shape = make()
    kernel_arg = "depthwise_quantizer" if quant_cls is QuantDepthwiseConv2D else "kernel_quantizer"
    quant = quant_cls(**kwargs, input_quantizer="ste_sign", **{kernel_arg: "ste_sign"})
    plain = parent_cls(**kwargs)
    quant.build(shape)
    plain.build(shape)
    weights = [w + 0.5 for w in quant.get_weights()]  # biases too, non-zero
    quant.set_weights(weights)
    plain.set_weights([sign(weights[0]), *weights[1:]])
    x = rng.normal(size=shape).astype("float32")
    np.testing.assert_array_equal(quant(x), plain(sign(x)))


def test_call_leaves_the_latent_kernel_as_the_only_tracked_weight():
    layer = QuantDense(3, kernel_quantizer="ste_sign", use_bias=False)
    layer(np.ones((1, 2), "float32"))
    assert isinstance(layer.kernel, keras.Variable)
    assert layer.trainable_weights == [layer.kernel]
    assert not np.all(np.abs(layer.kernel.numpy()) == 1.0)  # still the real values


def test_failing_call_still_restores_the_kernel():
    layer = QuantConv2D(2, 3, kernel_quantizer="ste_sign")
    layer.build((1, 5, 5, 1))
    with pytest.raises(Exception):
        layer.call(np.ones((1, 5, 5, 7), "float32"))  # wrong channel count
    assert isinstance(layer.kernel, keras.Variable)


def test_lora_update_is_added_to_the_quantized_kernel():
    # QLoRA-style: a float low-rank adapter on quantized weights.
    layer = QuantDense(4, kernel_quantizer="ste_sign", lora_rank=2, use_bias=False)
    layer.build((None, 3))
    layer.lora_kernel_b.assign(rng.normal(size=(2, 4)).astype("float32"))
    x = rng.normal(size=(5, 3)).astype("float32")
    a, b = layer.lora_kernel_a.numpy(), layer.lora_kernel_b.numpy()
    expected = x @ (sign(layer._kernel.numpy()) + (layer.lora_alpha / layer.lora_rank) * a @ b)
    np.testing.assert_allclose(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_quantized_training_step_under_mirrored_strategy(mirrored_strategy):
    # Replicas trace the layer's call one after another; each sees its own quantized kernel.
    with mirrored_strategy.scope():
        model = keras.Sequential([keras.Input((6,)), QuantDense(
            4, input_quantizer="ste_sign", kernel_quantizer="ste_sign")])
        model.compile("sgd", "mse")
    x = rng.normal(size=(8, 6)).astype("float32")
    model.fit(x, rng.normal(size=(8, 4)), batch_size=8, epochs=1, verbose=0)
    expected = sign(x) @ sign(model.layers[0].kernel.numpy()) + model.layers[0].bias.numpy()
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=1e-6, atol=1e-6)


def test_loading_needs_import_kbnn_because_keras_imports_only_its_own_modules(tmp_path):
    # Keras 3.15 looks a custom class up by its registered name ("kbnn>QuantDense")
    # in the registry that `import kbnn` fills, and imports a module named in the
    # file only if it belongs to keras, keras_hub, keras_cv or keras_nlp. So a kbnn
    # file fails without `import kbnn` (with Keras's own message) and loads after it.
    # If a future Keras imports the named module, the first load succeeds and this
    # test says to update the layers module docstring.
    import os
    import subprocess
    import sys
    import textwrap

    path = tmp_path / "model.keras"
    keras.Sequential([keras.Input((4,)), QuantDense(2, kernel_quantizer="ste_sign")]).save(path)
    script = textwrap.dedent(f"""
        import keras
        try:
            keras.models.load_model({str(path)!r})
            print("LOADED WITHOUT IMPORT")
        except TypeError as error:
            print("FAILED:", "Could not locate class 'QuantDense'" in str(error))
        import kbnn
        model = keras.models.load_model({str(path)!r})
        print("LOADED AFTER IMPORT:", type(model.layers[0]).__name__)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.split("\n")
    assert "FAILED: True" in lines, result.stdout
    assert "LOADED AFTER IMPORT: QuantDense" in lines, result.stdout


def same_pads(size, k, s, d=1):
    """TensorFlow's "same" padding of one axis, written out: (before, after)."""
    out = -(-size // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


@pytest.mark.parametrize("kwargs, shape", [
    (dict(kernel_size=3), (2, 6, 6, 2)),
    (dict(kernel_size=(2, 4), strides=2), (2, 7, 6, 2)),  # asymmetric, odd totals
    (dict(kernel_size=3, dilation_rate=2), (1, 5, 6, 2)),
    (dict(kernel_size=3, strides=(1, 2), data_format="channels_first"), (2, 2, 5, 6)),
])
@pytest.mark.parametrize("depthwise", [False, True])
def test_pad_values_pad_the_quantized_input_as_same_padding_would(kwargs, shape, depthwise):
    if depthwise:
        quant = QuantDepthwiseConv2D(**kwargs, padding="same", pad_values=1.0,
                                     input_quantizer="ste_sign", depthwise_quantizer="ste_sign")
        plain = keras.layers.DepthwiseConv2D(**kwargs, padding="valid")
    else:
        quant = QuantConv2D(3, **kwargs, padding="same", pad_values=1.0,
                            input_quantizer="ste_sign", kernel_quantizer="ste_sign")
        plain = keras.layers.Conv2D(3, **kwargs, padding="valid")
    x = rng.normal(size=shape).astype("float32")
    y = quant(x)
    first = 1 if quant.data_format == "channels_last" else 2
    pads = [(0, 0)] * 4
    for i, axis in enumerate((first, first + 1)):
        pads[axis] = same_pads(shape[axis], quant.kernel_size[i], quant.strides[i],
                               quant.dilation_rate[i])
    padded = np.pad(sign(x), pads, constant_values=1.0)
    plain.build(padded.shape)
    plain.set_weights([sign(quant.get_weights()[0]), *quant.get_weights()[1:]])
    np.testing.assert_array_equal(y, plain(padded))
    assert tuple(y.shape) == quant.compute_output_shape(shape)  # as "same" padding's
    assert quant.padding == "same"


def test_pad_values_with_unknown_spatial_size_and_in_a_saved_model(tmp_path):
    inputs = keras.Input((None, None, 2))
    outputs = QuantConv2D(2, 3, strides=2, padding="same", pad_values=1.0,
                          input_quantizer="ste_sign", kernel_quantizer="ste_sign")(inputs)
    model = keras.Model(inputs, outputs)
    x = rng.normal(size=(1, 5, 4, 2)).astype("float32")
    expected = model.predict(x, verbose=0)
    assert expected.shape == (1, 3, 2, 2)
    model.save(tmp_path / "m.keras")
    restored = keras.models.load_model(tmp_path / "m.keras")
    assert restored.layers[1].pad_values == 1.0
    np.testing.assert_array_equal(restored.predict(x, verbose=0), expected)
    static = QuantConv2D(4, 3, padding="same", pad_values=-1.0)(keras.Input((6, 6, 2)))
    assert static.shape == (None, 6, 6, 4)  # static shapes stay static


def test_pad_values_zero_or_valid_padding_change_nothing():
    x = rng.normal(size=(2, 6, 6, 2)).astype("float32")
    for padding, pad_values in [("same", 0.0), ("valid", 1.0)]:
        quant = QuantConv2D(3, 3, padding=padding, pad_values=pad_values,
                            input_quantizer="ste_sign")
        plain = keras.layers.Conv2D(3, 3, padding=padding)
        plain.build(x.shape)
        quant.build(x.shape)
        plain.set_weights(quant.get_weights())
        np.testing.assert_array_equal(quant(x), plain(sign(x)))
    # Configs written before pad_values existed load with the default.
    config = QuantConv2D(2, 3).get_config()
    del config["pad_values"]
    assert QuantConv2D.from_config(config).pad_values == 0.0


@pytest.mark.parametrize("quant_cls, parent_cls, kwargs, shape", [
    (QuantConv1D, keras.layers.Conv1D, dict(filters=3, kernel_size=3, strides=2), (2, 9, 2)),
    (QuantConv1D, keras.layers.Conv1D, dict(filters=3, kernel_size=3, padding="causal"),
     (2, 7, 2)),
    (QuantConv3D, keras.layers.Conv3D, dict(filters=2, kernel_size=2), (1, 4, 5, 3, 2)),
    (QuantConv2DTranspose, keras.layers.Conv2DTranspose,
     dict(filters=3, kernel_size=3, strides=2, padding="same"), (2, 4, 5, 2)),
    (QuantConv3DTranspose, keras.layers.Conv3DTranspose, dict(filters=2, kernel_size=2),
     (1, 3, 3, 2, 2)),
])
def test_other_quantized_convolutions_are_their_parent_on_quantized_values(
        quant_cls, parent_cls, kwargs, shape):
    quant = quant_cls(**kwargs, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                      kernel_constraint="weight_clip")
    assert isinstance(quant.kernel_constraint, kbnn.constraints.WeightClip)
    plain = parent_cls(**kwargs)
    quant.build(shape)
    plain.build(shape)
    weights = [w + 0.5 for w in quant.get_weights()]
    quant.set_weights(weights)
    plain.set_weights([sign(weights[0]), *weights[1:]])
    x = rng.normal(size=shape).astype("float32")
    np.testing.assert_array_equal(quant(x), plain(sign(x)))


@pytest.mark.parametrize("quant_cls, parent_cls, shape", [
    (QuantSeparableConv1D, keras.layers.SeparableConv1D, (2, 8, 3)),
    (QuantSeparableConv2D, keras.layers.SeparableConv2D, (2, 6, 7, 3)),
])
def test_separable_convolutions_quantize_both_kernels(quant_cls, parent_cls, shape):
    quant = quant_cls(4, 3, depth_multiplier=2, input_quantizer="ste_sign",
                      depthwise_quantizer="ste_sign", pointwise_quantizer="approx_sign",
                      depthwise_constraint="weight_clip", pointwise_constraint="weight_clip")
    assert isinstance(quant.pointwise_constraint, kbnn.constraints.WeightClip)
    plain = parent_cls(4, 3, depth_multiplier=2)
    quant.build(shape)
    plain.build(shape)
    weights = [w + 0.3 for w in quant.get_weights()]
    quant.set_weights(weights)
    plain.set_weights([sign(weights[0]), sign(weights[1]), weights[2]])
    x = rng.normal(size=shape).astype("float32")
    np.testing.assert_allclose(quant(x), plain(sign(x)), rtol=1e-6, atol=1e-5)
    config = quant.get_config()
    assert config["pointwise_quantizer"]["class_name"] == "ApproxSign"
    assert "kernel_quantizer" not in config
    assert [q.__class__.__name__ for _, q in quant.quantized_kernels()] == [
        "SteSign", "ApproxSign"]


@pytest.mark.parametrize("make, shape", [
    (lambda: QuantConv1D(2, 4, strides=3, padding="same", pad_values=1.0,
                         input_quantizer="ste_sign"), (1, 10, 2)),
    (lambda: QuantConv3D(2, 3, padding="same", pad_values=1.0,
                         input_quantizer="ste_sign"), (1, 3, 4, 5, 1)),
    (lambda: QuantSeparableConv2D(2, 3, strides=2, padding="same", pad_values=1.0,
                                  input_quantizer="ste_sign"), (1, 5, 6, 2)),
])
def test_pad_values_on_every_convolution_with_same_padding(make, shape):
    quant = make()
    x = rng.normal(size=shape).astype("float32")
    y = quant(x)
    pads = [(0, 0), *(same_pads(n, k, s) for n, k, s in
                      zip(shape[1:-1], quant.kernel_size, quant.strides)), (0, 0)]
    config = {**quant.get_config(), "padding": "valid", "pad_values": 0.0,
              "input_quantizer": None}
    valid = type(quant).from_config(config)
    padded = np.pad(sign(x), pads, constant_values=1.0)
    valid.build(padded.shape)
    valid.set_weights(quant.get_weights())
    np.testing.assert_allclose(y, valid(padded), rtol=1e-6, atol=1e-6)


def test_every_layer_round_trips_through_a_keras_file(tmp_path):
    inputs = keras.Input((6, 6, 2))
    x = QuantSeparableConv2D(3, 3, padding="same", pad_values=1.0, input_quantizer="ste_sign",
                             depthwise_quantizer="ste_sign",
                             pointwise_quantizer="ste_sign")(inputs)
    x = QuantConv2DTranspose(2, 3, strides=2, kernel_quantizer="ste_tern")(x)
    x = keras.layers.Reshape((13 * 13, 2))(x)
    x = QuantConv1D(2, 3, padding="same", pad_values=-1.0, kernel_quantizer="dorefa_quantizer",
                    input_quantizer=kbnn.quantizers.DoReFa(k_bit=2))(x)
    model = keras.Model(inputs, x)
    x = rng.normal(size=(2, 6, 6, 2)).astype("float32")
    model.save(tmp_path / "m.keras")
    restored = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(restored.predict(x, verbose=0), model.predict(x, verbose=0))
    assert [type(l) for l in restored.layers] == [type(l) for l in model.layers]


def binary_pair(layer_cls, shape, **kwargs):
    """A binary layer and the same product by plain TensorFlow ops on ste_sign'd values."""
    layer = layer_cls(**kwargs, input_quantizer="ste_sign", kernel_quantizer="ste_sign")
    layer.build(shape)
    # Mostly positive inputs and kernels: sums of several hundred +1 terms.
    layer.kernel.assign(np.abs(layer.kernel.numpy()) - 0.01)
    return layer


@pytest.mark.parametrize("compute", ["float32", "bfloat16"])
@pytest.mark.parametrize("layer_cls, kwargs, shape, product", [
    (QuantDense, dict(units=5), (4, 784), lambda x, w: tf.matmul(x, w)),
    (QuantDense, dict(units=3, activation="relu"), (2, 3, 600),
     lambda x, w: tf.nn.relu(keras.ops.matmul(x, w))),
    (QuantConv2D, dict(filters=4, kernel_size=3, padding="same", use_bias=False), (2, 6, 6, 96),
     lambda x, w: tf.nn.conv2d(x, w, 1, "SAME")),
    (QuantConv2D, dict(filters=3, kernel_size=3, padding="same", pad_values=1.0, strides=2,
                       use_bias=False), (2, 7, 7, 48),
     lambda x, w: tf.nn.conv2d(tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]],
                                      constant_values=1.0), w, 2, "VALID")),
    (QuantConv1D, dict(filters=3, kernel_size=3, use_bias=False), (2, 9, 200),
     lambda x, w: tf.nn.conv1d(x, w, 1, "VALID")),
])
def test_binary_product_and_gradients_are_bit_identical_to_float32_ops(
        compute, layer_cls, kwargs, shape, product):
    layer = binary_pair(layer_cls, shape, compute=compute, **kwargs)
    assert layer.integer_operands()
    x = tf.constant(np.abs(rng.normal(size=shape)).astype("float32") - 0.05)
    dy = None

    def run(fn):
        nonlocal dy
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn()
        dy = tf.constant(rng.normal(size=y.shape).astype("float32")) if dy is None else dy
        return [y, *tape.gradient(y, [x, layer.kernel], output_gradients=dy)]

    got = run(lambda: layer(x, training=True))
    bias = layer.bias if layer.use_bias else 0.0
    expected = run(lambda: product(kbnn.quantizers.ste_sign(x),
                                   kbnn.quantizers.ste_sign(layer.kernel)) + bias)
    assert np.abs(got[0].numpy()).max() > 256
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g.numpy(), e.numpy())


def test_integer_operands_only_when_both_quantizers_give_small_integers():
    def dense(**kwargs):
        layer = QuantDense(2, **{"input_quantizer": "ste_sign", "kernel_quantizer": "ste_sign",
                                 **kwargs})
        layer.build((1, 3))
        return layer.integer_operands()

    assert dense()
    assert dense(input_quantizer="ste_tern", kernel_quantizer="approx_sign")
    assert not dense(input_quantizer=None)
    assert not dense(kernel_quantizer="magnitude_aware_sign")
    assert not dense(input_quantizer="dorefa_quantizer")
    assert not dense(lora_rank=1)
    assert not QuantConv2D(2, 3, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                           padding="same", pad_values=0.5).integer_operands()


def test_compute_round_trips_and_an_unknown_one_names_the_layer():
    layer = QuantConv2D(2, 3, compute="bfloat16", name="c1")
    assert QuantConv2D.from_config(layer.get_config()).compute == "bfloat16"
    assert QuantDense(2).get_config()["compute"] == "float32"
    with pytest.raises(ValueError, match=r"Unknown compute of layer 'd1' 'int4'; use one of: "
                                         r"float32, bfloat16"):
        QuantDense(2, compute="int4", name="d1")


def test_set_compute_sets_every_kbnn_layer_of_nested_models():
    inner = keras.Sequential([keras.Input((4,)), QuantDense(3), keras.layers.Dense(3)])
    outer = keras.Sequential([keras.Input((4,)), inner, QuantDense(2)])
    assert kbnn.layers.set_compute(outer, "bfloat16") == 2
    assert inner.layers[0].compute == outer.layers[-1].compute == "bfloat16"
    with pytest.raises(ValueError, match="Unknown compute 'half'"):
        kbnn.layers.set_compute(outer, "half")


def test_auto_compute_picks_bfloat16_for_binary_convolutions_only(monkeypatch):
    from kbnn import exact_product

    monkeypatch.setattr(exact_product, "fast_bfloat16", lambda: True)
    model = kbnn.zoo.bnn_cnn()
    assert kbnn.layers.set_compute(model, "auto") == 8
    computes = [(type(layer).__name__, layer.compute) for layer in model.layers
                if hasattr(layer, "compute")]
    # The first convolution sees the real-valued image; dense layers stay float32.
    assert computes == [("QuantConv2D", "float32")] + [("QuantConv2D", "bfloat16")] * 5 \
        + [("QuantDense", "float32")] * 2
    zero_one = QuantConv2D(4, 3, input_quantizer="ste_heaviside", kernel_quantizer="ste_sign")
    assert kbnn.layers.auto_compute(zero_one) == "float32"  # zeros: the 512-term groups fail
    monkeypatch.setattr(exact_product, "fast_bfloat16", lambda: False)
    kbnn.layers.set_compute(model, "auto")
    assert {layer.compute for layer in model.layers if hasattr(layer, "compute")} == {"float32"}


def test_fast_bfloat16_reads_the_cpu_flags(tmp_path):
    from kbnn.exact_product import fast_bfloat16

    for flags, expected in [("fpu avx512f avx512_bf16 avx512_vnni", True),
                            ("fpu avx2 avx512f", False), ("amx_bf16 amx_tile", True)]:
        cpuinfo = tmp_path / f"cpuinfo{expected}{len(flags)}"
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        assert fast_bfloat16(str(cpuinfo)) is expected
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n")
    assert fast_bfloat16(str(arm)) is True
    assert fast_bfloat16(str(tmp_path / "missing")) is False


def test_auto_trains_the_cnn_bit_identically_to_float32(monkeypatch):
    # What kbnn.train does by default: bfloat16 convolutions (here of 576 terms: two
    # groups), float32 elsewhere; every weight after the steps equals float32 training's.
    from kbnn import exact_product
    from kbnn.train.fit import compile_model

    monkeypatch.setattr(exact_product, "fast_bfloat16", lambda: True)
    data = np.random.default_rng(1)
    x = data.random((32, 28, 28, 1), dtype=np.float32)
    y = data.integers(0, 10, 32)
    weights = {}
    for compute in ("float32", "auto"):
        keras.utils.set_random_seed(0)
        model = kbnn.zoo.bnn_cnn(filters=(16, 64, 64), dense_units=32, dropout=0.0)
        kbnn.layers.set_compute(model, compute)
        compile_model(model, 1e-2, steps_per_execution=2)
        model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
        weights[compute] = model.get_weights()
    assert "bfloat16" in {layer.compute for layer in model.layers if hasattr(layer, "compute")}
    for a, b in zip(weights["float32"], weights["auto"]):
        np.testing.assert_array_equal(a, b)
