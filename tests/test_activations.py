import keras
import numpy as np
import tensorflow as tf

import kbnn
from kbnn import activations, math


def test_hard_tanh_clips_and_is_keras_own():
    x = np.array([-3.0, -1.0, 0.2, 1.0, 4.0], "float32")
    np.testing.assert_array_equal(activations.hard_tanh(x), np.float32([-1, -1, 0.2, 1, 1]))
    assert keras.activations.get("hard_tanh") is activations.hard_tanh


def test_leaky_tanh_values_and_slopes():
    x = tf.constant([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = activations.leaky_tanh(x)
    np.testing.assert_allclose(y, [-1.4, -1, -0.5, 0, 0.5, 1, 1.2], rtol=1e-6)
    np.testing.assert_allclose(tf.gather(tape.gradient(y, x), [0, 2, 3, 4, 6]),
                               [0.2, 1, 1, 1, 0.2], rtol=1e-6)
    np.testing.assert_allclose(activations.leaky_tanh(x, alpha=0.0), np.clip(x, -1, 1))


def test_leaky_tanh_round_trips_through_a_keras_file(tmp_path):
    model = keras.Sequential([keras.Input((3,)), kbnn.layers.QuantDense(
        2, activation=activations.leaky_tanh, kernel_initializer="ones")])
    model.save(tmp_path / "m.keras")
    restored = keras.models.load_model(tmp_path / "m.keras")
    assert restored.layers[0].activation is activations.leaky_tanh
    x = np.full((1, 3), 2.0, "float32")  # 6.0 -> 1 + 0.2 * 5
    np.testing.assert_allclose(restored.predict(x, verbose=0), [[2.0, 2.0]], rtol=1e-6)


def test_math_sign_and_heaviside_are_the_quantizer_conventions():
    x = np.array([-1.0, -0.0, 0.0, 2.0], "float32")
    np.testing.assert_array_equal(math.sign(x), [-1, 1, 1, 1])
    np.testing.assert_array_equal(math.heaviside(x), [0, 0, 0, 1])
    assert math.sign is kbnn.quantizers.sign and math.heaviside is kbnn.quantizers.heaviside
