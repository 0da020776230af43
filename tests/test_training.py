"""Training with quantized layers: jit_compile and MirroredStrategy."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kbnn
from kbnn.layers import QuantConv2D, QuantDense


def tiny_bnn(stochastic_seed=None):
    act = (kbnn.quantizers.StochasticSign(seed=stochastic_seed)
           if stochastic_seed is not None else "ste_sign")
    return keras.Sequential([
        keras.Input((6, 6, 1)),
        QuantConv2D(4, 3, kernel_quantizer="ste_sign", kernel_constraint="weight_clip",
                    use_bias=False),
        keras.layers.BatchNormalization(),
        keras.layers.Flatten(),
        QuantDense(8, input_quantizer=act, kernel_quantizer="ste_sign",
                   kernel_constraint="weight_clip", use_bias=False),
        keras.layers.BatchNormalization(),
        QuantDense(2, input_quantizer="ste_sign", kernel_quantizer="ste_sign"),
    ])


def tiny_data(n=64):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, 6, 6, 1)).astype("float32")
    y = (x.mean(axis=(1, 2, 3)) > 0).astype("int32")
    return x, y


def fit(model, jit_compile=False, epochs=3):
    model.compile(keras.optimizers.Adam(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=jit_compile)
    x, y = tiny_data()
    return model.fit(x, y, batch_size=16, epochs=epochs, verbose=0, shuffle=False)


@pytest.mark.parametrize("stochastic", [False, True])
def test_trains_with_jit_compile(stochastic):
    keras.utils.set_random_seed(0)
    model = tiny_bnn(stochastic_seed=3 if stochastic else None)
    before = [w.copy() for w in model.get_weights()]
    history = fit(model, jit_compile=True)
    assert all(np.isfinite(history.history["loss"]))
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    # The constraint keeps latent binary weights in [-1, 1].
    assert np.abs(model.layers[0].kernel.numpy()).max() <= 1.0


def test_seeded_stochastic_training_repeats_exactly():
    runs = []
    for _ in range(2):
        keras.utils.set_random_seed(0)
        model = tiny_bnn(stochastic_seed=11)
        history = fit(model, epochs=2)
        runs.append((history.history["loss"], model.get_weights()))
    assert runs[0][0] == runs[1][0]
    for a, b in zip(runs[0][1], runs[1][1]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("stochastic", [False, True])
def test_trains_under_mirrored_strategy_on_two_cpus(stochastic, mirrored_strategy):
    strategy = mirrored_strategy
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = tiny_bnn(stochastic_seed=3 if stochastic else None)
        history = fit(model)
    assert strategy.num_replicas_in_sync == 2
    assert all(np.isfinite(history.history["loss"]))
    x, _ = tiny_data()
    assert model.predict(x, verbose=0).shape == (64, 2)
