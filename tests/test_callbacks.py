import keras
import numpy as np
import pytest

import kbnn
from kbnn.callbacks import HyperparameterScheduler
from kbnn.optimizers import Bop, CaseOptimizer


def fit(callback, optimizer, epochs=3):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((4,)),
        kbnn.layers.QuantDense(3, kernel_quantizer=kbnn.quantizers.NoOp(precision=1)),
    ])
    model.compile(optimizer, "mse")
    rng = np.random.default_rng(0)
    return model.fit(rng.normal(size=(32, 4)), rng.normal(size=(32, 3)), batch_size=8,
                     epochs=epochs, callbacks=[callback], verbose=0)


def test_schedules_bop_gamma_per_epoch_and_logs_it():
    bop = Bop(gamma=1.0)
    optimizer = CaseOptimizer((Bop.is_binary_variable, bop),
                              default_optimizer=keras.optimizers.SGD(0.1))
    history = fit(HyperparameterScheduler(lambda epoch: 0.1 ** epoch, "gamma", bop), optimizer)
    np.testing.assert_allclose(history.history["gamma"], [1.0, 0.1, 0.01], rtol=1e-6)


def test_per_step_with_the_current_value_and_the_model_optimizer():
    steps = []

    def schedule(step, current):
        steps.append(step)
        return current * 0.5

    history = fit(HyperparameterScheduler(schedule, "learning_rate", update_freq="step",
                                          log_name="lr"), keras.optimizers.SGD(1.0), epochs=2)
    assert steps == list(range(8))  # the global step: 4 batches an epoch
    np.testing.assert_allclose(history.history["lr"], [0.5 ** 4, 0.5 ** 8])


def test_bop_threshold_is_schedulable():
    bop = Bop(threshold=1.0)
    optimizer = CaseOptimizer((Bop.is_binary_variable, bop))
    history = fit(HyperparameterScheduler(lambda epoch: 10.0 ** -epoch, "threshold", bop),
                  optimizer, epochs=2)
    np.testing.assert_allclose(history.history["threshold"], [1.0, 0.1], rtol=1e-6)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="update_freq is 'batch'"):
        HyperparameterScheduler(lambda e: 1.0, "learning_rate", update_freq="batch")
    with pytest.raises(ValueError, match="no hyperparameter variable 'momentum'"):
        fit(HyperparameterScheduler(lambda e: 0.5, "momentum"), keras.optimizers.SGD(0.1))
