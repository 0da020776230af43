"""kbnn.quantizer_ops: the C ops give TensorFlow's values bit for bit, and training uses them."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kbnn
from kbnn import quantizer_ops
from kbnn.train.fit import compile_model

SPECIAL = np.array([-np.inf, -3e38, -2.0, -1.0, -0.5, -1e-45, -0.0, 0.0, 1e-45, 0.5, 1.0,
                    1.0000001, 2.0, 3e38, np.inf, np.nan, -np.nan], "float32")


def bits(x):
    return np.asarray(x, "float32").view(np.uint32)


def values(shape, seed):
    """Random normals with the special values mixed in."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape).astype("float32").ravel()
    x[: min(x.size, SPECIAL.size)] = SPECIAL[: x.size]
    return rng.permutation(x).reshape(shape)


SHAPES = [(), (0,), (17,), (3, 4, 5), (100, 1024), (2, 7, 7, 3, 2)]


def test_the_library_is_built_and_loads():
    # CI installs kbnn with `pip install -e .`, which builds it: it must be there.
    assert quantizer_ops.library_path() is not None
    assert quantizer_ops.available() and quantizer_ops.enabled()


def test_a_library_that_does_not_load_warns_and_trains_with_tensorflows_ops(
        tmp_path, monkeypatch):
    broken = tmp_path / "_quantizer_ops.so"
    broken.write_bytes(b"not a shared library")
    monkeypatch.setattr(quantizer_ops, "library_path", lambda: str(broken))
    quantizer_ops._library.cache_clear()
    try:
        with pytest.warns(UserWarning, match="do not load into this TensorFlow"):
            assert not quantizer_ops.available()
        assert not quantizer_ops.enabled()
        with pytest.raises(RuntimeError, match="pip install -e"):
            quantizer_ops.sign([1.0])
    finally:
        quantizer_ops._library.cache_clear()


@pytest.mark.parametrize("shape", SHAPES)
def test_sign_is_tensorflows_sign(shape):
    x = values(shape, 0)
    got = quantizer_ops.sign(x)
    assert got.shape == shape and got.dtype == tf.float32
    np.testing.assert_array_equal(bits(got), bits(kbnn.quantizers.sign(x)))


def test_sign_of_zeros_and_nan():
    # (Denormals are not here: TensorFlow flushes them to zero, and so do these ops.)
    got = quantizer_ops.sign([-0.0, 0.0, np.nan, -np.nan, -2.0]).numpy()
    np.testing.assert_array_equal(got, [1, 1, -1, -1, -1])


@pytest.mark.parametrize("clip_value", [1.0, 0.5, 0.0, 3e38])
@pytest.mark.parametrize("shape", SHAPES)
def test_sign_and_mask_are_tensorflows(shape, clip_value):
    x = values(shape, 1)
    y, keep = quantizer_ops.sign_and_mask(x, clip_value)
    np.testing.assert_array_equal(bits(y), bits(kbnn.quantizers.sign(x)))
    assert keep.dtype == tf.bool and keep.shape == shape
    np.testing.assert_array_equal(keep, tf.abs(x) <= clip_value)


def test_the_mask_holds_both_ends_of_the_clip_range():
    _, keep = quantizer_ops.sign_and_mask([-1.0, 1.0, -1.0000001, 1.0000001, np.nan], 1.0)
    np.testing.assert_array_equal(keep, [True, True, False, False, False])


@pytest.mark.parametrize("clip_value", [1.0, 0.5])
@pytest.mark.parametrize("shape", SHAPES)
def test_stochastic_sign_and_mask_are_tensorflows(shape, clip_value):
    x = values(shape, 7)
    noise = np.random.default_rng(8).random(shape).astype("float32")
    flat = noise.reshape(-1)
    flat[: min(flat.size, 4)] = [0.0, 0.5, 0.99999994, 0.25][: flat.size]  # edges of U[0, 1)
    y, keep = quantizer_ops.stochastic_sign_and_mask(x, noise, clip_value)
    expected = tf.where(noise < kbnn.quantizers.hard_sigmoid(x), 1.0, -1.0)
    np.testing.assert_array_equal(bits(y), bits(expected))
    np.testing.assert_array_equal(keep, tf.abs(x) <= clip_value)


def test_stochastic_sign_of_the_edges():
    x = [-1.0, 1.0, 0.0, 0.0, np.nan, np.inf, -np.inf]
    noise = [0.0, 0.99999994, 0.49999997, 0.5, 0.0, 0.99999994, 0.0]
    y, _ = quantizer_ops.stochastic_sign_and_mask(x, noise, 1.0)
    np.testing.assert_array_equal(y, [-1, 1, 1, -1, -1, 1, -1])


def test_stochastic_sign_refuses_noise_of_another_shape():
    with pytest.raises(tf.errors.InvalidArgumentError, match="same shape"):
        quantizer_ops.stochastic_sign_and_mask(np.ones(4, "float32"), np.ones(5, "float32"), 1.0)


@pytest.mark.parametrize("shape", SHAPES)
def test_masked_gradient_is_tensorflows(shape):
    dy = values(shape, 2)
    keep = np.random.default_rng(3).random(shape) < 0.5
    got = quantizer_ops.masked_gradient(dy, keep)
    np.testing.assert_array_equal(bits(got), bits(dy * tf.cast(keep, tf.float32)))


def test_masked_gradient_keeps_signed_zeros_and_nan():
    got = quantizer_ops.masked_gradient([-3.0, 3.0, np.inf, np.nan, 2.0],
                                        [False, False, False, False, True])
    np.testing.assert_array_equal(bits(got)[[0, 1, 4]], bits([-0.0, 0.0, 2.0]))
    assert np.isnan(got[2:4]).all()


def test_masked_gradient_refuses_another_shape():
    with pytest.raises(tf.errors.InvalidArgumentError, match="same shape"):
        quantizer_ops.masked_gradient(np.ones((2, 3), "float32"), np.ones((3, 2), bool))


def _sign_and_gradient(x, training, quantizer=None):
    quantizer = quantizer or kbnn.quantizers.SteSign()
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = quantizer(x, training=training)
        loss = tf.reduce_sum(y * tf.reshape(tf.range(tf.size(y), dtype=tf.float32), y.shape))
    return y, tape.gradient(loss, x)


def test_ste_sign_training_gives_tensorflows_values_and_gradients():
    x = tf.constant(values((64, 8), 4))
    with quantizer_ops.disabled():
        expected = _sign_and_gradient(x, True)
    for got, want in zip(_sign_and_gradient(x, True), expected):
        np.testing.assert_array_equal(bits(got), bits(want))


@pytest.mark.parametrize("clip_value", [1.0, None])
def test_stochastic_sign_training_gives_tensorflows_values_and_gradients(clip_value):
    x = tf.constant(values((64, 8), 9))
    with quantizer_ops.disabled():
        expected = _sign_and_gradient(x, True, kbnn.quantizers.StochasticSign(clip_value, 3))
    got = _sign_and_gradient(x, True, kbnn.quantizers.StochasticSign(clip_value, 3))
    for got, want in zip(got, expected):
        np.testing.assert_array_equal(bits(got), bits(want))


def test_latent_kernels_give_tensorflows_gradient():
    layer = kbnn.layers.QuantDense(5, kernel_quantizer="ste_sign", use_bias=False)
    layer.build((None, 7))
    layer.kernel.assign(np.linspace(-2, 2, 35, dtype="float32").reshape(7, 5))  # |w| > 1 too
    x = tf.constant(np.random.default_rng(6).normal(size=(3, 7)).astype("float32"))

    def step():
        with tf.GradientTape() as tape:
            y = layer(x, training=True)
        return y, tape.gradient(tf.reduce_sum(y * y), layer.kernel)

    with quantizer_ops.disabled():
        expected = step()
    for got, want in zip(step(), expected):
        np.testing.assert_array_equal(bits(got), bits(want))


def _op_types(model, training):
    function = tf.function(lambda x: model(x, training=training))
    graph = function.get_concrete_function(
        tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)).graph
    return {op.type for op in graph.get_operations()}


def test_training_graphs_use_the_ops_and_inference_graphs_do_not():
    model = kbnn.zoo.bnn_mlp((16,))
    assert {"KbnnSign", "KbnnSignAndMask"} <= _op_types(model, True)
    assert not any(t.startswith("Kbnn") for t in _op_types(model, False))
    with quantizer_ops.disabled():
        assert not any(t.startswith("Kbnn") for t in _op_types(model, True))


def test_the_environment_variable_turns_them_off(monkeypatch):
    monkeypatch.setenv("KBNN_QUANTIZER_OPS", "0")
    assert not quantizer_ops.enabled()
    assert not any(t.startswith("Kbnn") for t in _op_types(kbnn.zoo.bnn_mlp((16,)), True))


def _train(builder, data, **compile_args):
    keras.utils.set_random_seed(1)
    model = builder()
    compile_model(model, 1e-2, **compile_args)
    model.fit(data, epochs=2, verbose=0)
    return model.get_weights()


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (96, 28, 28, 1)).astype("float32") / 255
    y = rng.integers(0, 10, 96).astype("int32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(32)


@pytest.mark.parametrize("builder", [lambda: kbnn.zoo.bnn_mlp((32,)),
                                     lambda: kbnn.zoo.bnn_mlp((32,), "stochastic", seed=0),
                                     lambda: kbnn.zoo.bnn_cnn((8, 8, 16), 16)],
                         ids=["mlp", "stochastic-mlp", "cnn"])
def test_training_with_the_ops_gives_the_same_weights(builder, data, monkeypatch):
    calls = []
    for name in ("sign_and_mask", "stochastic_sign_and_mask"):
        original = getattr(quantizer_ops, name)
        monkeypatch.setattr(quantizer_ops, name,
                            lambda *args, original=original: calls.append(1) or original(*args))
    with_ops = _train(builder, data, steps_per_execution=2)
    assert calls, "the training step did not use kbnn's ops"
    with quantizer_ops.disabled():
        without = _train(builder, data, steps_per_execution=2)
    assert len(with_ops) == len(without)
    for got, want in zip(with_ops, without):
        np.testing.assert_array_equal(bits(got), bits(want))


def test_xla_compiled_training_runs_tensorflows_ops(data):
    # The ops have no XLA kernel: inside jit_compile the quantizers must not use them.
    weights = _train(lambda: kbnn.zoo.bnn_mlp((16,)), data.take(1), jit_compile=True,
                     steps_per_execution=1)
    assert all(np.isfinite(w).all() for w in weights)
