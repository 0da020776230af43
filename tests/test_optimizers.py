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


def test_private_keras_apis_are_pinned_to_the_versions_they_were_checked_on():
    import tensorflow as tf

    from kbnn.optimizers import _CHECKED_ON
    found = {"keras": keras.__version__, "tensorflow": tf.__version__}
    for package, checked in _CHECKED_ON.items():
        assert found[package].startswith(checked + "."), (
            f"kbnn.optimizers reads Keras-private Adam slots (_adam_slots) and per-replica "
            f"handles (_handle), checked on {package} {checked}; this is {found[package]}. "
            f"Check that test_adam_slots_are_what_keras_updates and the Adam tests pass, "
            f"then update _CHECKED_ON.")


def test_adam_slots_are_what_keras_updates():
    from kbnn.optimizers import _adam_slots
    variable = keras.Variable(np.zeros((2, 3), "float32"))
    other = keras.Variable(np.zeros((4,), "float32"))
    optimizer = keras.optimizers.Adam(0.1, beta_1=0.9, beta_2=0.99)
    gradient = np.full((2, 3), 2.0, "float32")
    optimizer.apply_gradients([(gradient, variable), (np.ones(4, "float32"), other)])
    momentum, velocity = _adam_slots(optimizer, variable)
    np.testing.assert_allclose(momentum, 0.1 * gradient, rtol=1e-6)
    np.testing.assert_allclose(velocity, 0.01 * gradient ** 2, rtol=1e-6)
    assert _adam_slots(optimizer, other)[0].shape == (4,)


def test_falls_back_to_keras_update_without_the_private_slots(monkeypatch):
    import kbnn.optimizers
    monkeypatch.setattr(kbnn.optimizers, "_adam_slots", lambda optimizer, variable: None)
    _assert_same_training(_train(lambda: Adam(1e-2), steps=3),
                          _train(lambda: keras.optimizers.Adam(1e-2), steps=3))
