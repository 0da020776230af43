"""Larq's `HyperparameterScheduler`: set any optimizer hyperparameter per epoch or per step.

>>> import keras, kbnn
>>> bop = kbnn.optimizers.Bop(threshold=1e-6, gamma=1e-3)
>>> optimizer = kbnn.optimizers.CaseOptimizer(
...     (kbnn.optimizers.Bop.is_binary_variable, bop),
...     default_optimizer=keras.optimizers.Adam(0.01))
>>> callbacks = [kbnn.callbacks.HyperparameterScheduler(
...     lambda epoch: 1e-3 * 0.1 ** (epoch // 30), "gamma", bop)]

The hyperparameter must be a variable of the optimizer (as `learning_rate`,
Bop's `gamma` and `threshold` are), so that a new value reaches a training
step that was already traced.
"""

import inspect

import keras
from keras import ops

__all__ = ["HyperparameterScheduler"]


def _takes_two_arguments(schedule):
    try:
        inspect.signature(schedule).bind(0, 0.0)
        return True
    except TypeError:
        return False
    except ValueError:  # no signature (a builtin): call it with the index only
        return False


class HyperparameterScheduler(keras.callbacks.Callback):
    """Sets `optimizer.<hyperparameter>` to `schedule(t)` (or `schedule(t, current)`).

    Args:
        schedule: a function of the epoch index (from 0), or with
            update_freq="step" of the optimizer's step count; it may also take
            the current value as a second argument.
        hyperparameter: the attribute name, e.g. "learning_rate", "gamma".
        optimizer: the optimizer that has it (default: the model's).
        update_freq: "epoch" (at each epoch's start) or "step" (each batch's).
        verbose: 1 prints each new value.
        log_name: the name under which the value is logged at each epoch's
            end (default: `hyperparameter`).
    """

    def __init__(self, schedule, hyperparameter, optimizer=None, update_freq="epoch",
                 verbose=0, log_name=None):
        super().__init__()
        if update_freq not in ("epoch", "step"):
            raise ValueError(f"update_freq is {update_freq!r}; use 'epoch' or 'step'.")
        self.schedule = schedule
        self.hyperparameter = hyperparameter
        self.optimizer = optimizer
        self.update_freq = update_freq
        self.verbose = verbose
        self.log_name = log_name or hyperparameter

    def set_model(self, model):
        super().set_model(model)
        if self.optimizer is None:
            self.optimizer = model.optimizer
        value = getattr(self.optimizer, self.hyperparameter, None)
        if not hasattr(value, "assign"):
            raise ValueError(
                f"Optimizer {self.optimizer.name!r} has no hyperparameter variable "
                f"{self.hyperparameter!r} to schedule (found {value!r}); schedule one that "
                f"is a variable, such as 'learning_rate'.")

    def _value(self):
        return float(ops.convert_to_numpy(getattr(self.optimizer, self.hyperparameter)))

    def _set(self, t, when):
        args = (t, self._value()) if _takes_two_arguments(self.schedule) else (t,)
        getattr(self.optimizer, self.hyperparameter).assign(self.schedule(*args))
        if self.verbose > 0:
            print(f"{when} {t}: {self.log_name} is now {self._value()}.")

    def on_train_batch_begin(self, batch, logs=None):
        if self.update_freq == "step":  # the global step, not the batch in the epoch
            self._set(int(ops.convert_to_numpy(self.optimizer.iterations)), "Step")

    def on_epoch_begin(self, epoch, logs=None):
        if self.update_freq == "epoch":
            self._set(epoch, "Epoch")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs[self.log_name] = self._value()
