import keras
import numpy as np
import pytest

import kbnn
from kbnn.optimizers import Adam


def _train(optimizer, strategy=None, steps=20):
    """Weights after `steps` updates of a tiny BNN (BN, clipped binary kernels) from seed 0."""
    keras.utils.set_random_seed(0)
    scope = strategy.scope() if strategy else keras.name_scope("plain")
    with scope:
        model = kbnn.zoo.bnn_mlp((16,), input_dropout=0.0, dropout=0.0)
        model.compile(optimizer(), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    model.fit(rng.random((20 * steps, 28, 28, 1)), rng.integers(0, 10, 20 * steps),
              batch_size=20, epochs=1, shuffle=False, verbose=0)
    return model.get_weights()


def _assert_same_training(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("amsgrad", [False, True])
def test_updates_equal_keras_adam(amsgrad):
    schedule = lambda: keras.optimizers.schedules.CosineDecay(3e-3, 20)  # noqa: E731
    fused = _train(lambda: Adam(schedule(), amsgrad=amsgrad))
    reference = _train(lambda: keras.optimizers.Adam(schedule(), amsgrad=amsgrad))
    _assert_same_training(fused, reference)
    assert not np.allclose(fused[0], _train(lambda: Adam(schedule()), steps=1)[0])  # it moved


def test_updates_equal_keras_adam_under_mirrored_strategy(mirrored_strategy):
    _assert_same_training(_train(lambda: Adam(1e-2), mirrored_strategy),
                          _train(lambda: keras.optimizers.Adam(1e-2), mirrored_strategy))


def test_serializes_as_itself():
    optimizer = Adam(2e-3, beta_1=0.8, epsilon=1e-6)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(restored) is Adam
    assert restored.get_config() == optimizer.get_config()
