import keras
import numpy as np
import pytest

import kbnn
from kbnn.optimizers import Adam, Bop, CaseOptimizer


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


def test_bop_follows_its_update_rule():
    w0 = np.array([1.0, -1.0, 1.0, -1.0, 0.3], "float32")
    grads = [np.array([2.0, 2.0, -1.0, 0.0, 0.0], "float32"),
             np.array([2.0, -3.0, -1.0, 1.0, 0.0], "float32")]
    variable = keras.Variable(w0)
    bop = Bop(threshold=0.1, gamma=0.5)
    w, m = w0.copy(), np.zeros(5, "float32")
    for g in grads:
        bop.apply([g], [variable])
        m = m + 0.5 * (g - m)
        w = np.where(-np.sign(w * m - 0.1) * w >= 0, 1.0, -1.0)
        np.testing.assert_array_equal(variable.numpy(), w)
    # Step 1: m = [1, 1, -.5, 0, 0]: only the first weight flips (w * m = 1 > 0.1);
    # 0.3 * 0 - 0.1 < 0 keeps the sign of 0.3. Step 2: m = [1.5, -1, ...] flips the second.
    np.testing.assert_array_equal(variable.numpy(), [-1, 1, 1, -1, 1])


def test_bop_schedules_and_config():
    gamma = keras.optimizers.schedules.ExponentialDecay(1e-3, 10, 0.5)
    bop = Bop(threshold=1e-6, gamma=gamma)
    restored = Bop.from_config(bop.get_config())
    assert restored.get_config() == bop.get_config()
    assert restored.get_config()["threshold"] == pytest.approx(1e-6)
    assert restored.get_config()["gamma"]["class_name"] == "ExponentialDecay"
    threshold = keras.optimizers.schedules.ExponentialDecay(10.0, 1, 0.01)
    variable = keras.Variable(np.array([1.0], "float32"))
    bop = Bop(threshold=threshold, gamma=1.0)
    bop.apply([np.array([5.0], "float32")], [variable])  # 5 < threshold 10: kept
    assert variable.numpy()[0] == 1.0
    bop.apply([np.array([5.0], "float32")], [variable])  # 5 > 10 * 0.01: flips
    assert variable.numpy()[0] == -1.0
    assert isinstance(Bop.from_config(Bop(threshold=threshold).get_config()).threshold,
                      keras.optimizers.schedules.ExponentialDecay)


def bop_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((6,)),
        kbnn.layers.QuantDense(8, kernel_quantizer=kbnn.quantizers.NoOp(precision=1)),
        keras.layers.BatchNormalization(),
        kbnn.layers.QuantDense(3, input_quantizer="ste_sign", kernel_quantizer="ste_sign"),
    ])


def test_case_optimizer_trains_binary_kernels_with_bop_and_the_rest_with_the_default(tmp_path):
    model = bop_model()
    binary = model.layers[0].kernel
    assert Bop.is_binary_variable(binary) and Bop.is_binary_variable(model.layers[2].kernel)
    assert not Bop.is_binary_variable(model.layers[0].bias)
    optimizer = CaseOptimizer((Bop.is_binary_variable, Bop(threshold=1e-8, gamma=0.1)),
                              default_optimizer=keras.optimizers.Adam(0.01))
    model.compile(optimizer, "mse")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 6)), rng.normal(size=(64, 3))
    bias = model.layers[0].bias.numpy()
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert set(np.unique(binary.numpy())) == {-1.0, 1.0}  # Bop keeps weights at +-1
    assert not np.array_equal(model.layers[0].bias.numpy(), bias)  # Adam trained the rest
    bop, adam = optimizer.optimizers
    assert int(optimizer.iterations) == int(bop.iterations) == int(adam.iterations) == 8
    assert sorted(optimizer.var_opt_mapping.values()) == [0, 0] + [1] * 4
    # A saved model restores the assignment (predicates are not saved) and keeps training.
    model.save(tmp_path / "m.keras")
    restored = keras.models.load_model(tmp_path / "m.keras")
    assert restored.optimizer.var_opt_mapping == optimizer.var_opt_mapping
    restored.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert set(np.unique(restored.layers[0].kernel.numpy())) <= {-1.0, 1.0}


def test_case_optimizer_errors_name_the_problem():
    model = bop_model()
    variables = model.trainable_variables
    with pytest.raises(TypeError, match="argument 0"):
        CaseOptimizer(Bop())
    with pytest.raises(ValueError, match="claimed by optimizers \\[0, 1\\]"):
        CaseOptimizer((lambda v: True, Bop()), (lambda v: True, Bop())).build(variables)
    with pytest.raises(ValueError, match="Optimizer 1 .* claimed no variable"):
        CaseOptimizer((lambda v: True, Bop()), (lambda v: False, Bop())).build(variables)
    with pytest.warns(UserWarning, match="No default_optimizer"):
        CaseOptimizer((Bop.is_binary_variable, Bop())).build(variables)
