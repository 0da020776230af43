"""The settings of a training run, each checked before any work starts.

Example:

    >>> from kbnn.train.settings import Settings, SettingError
    >>> Settings(epochs=3, lr=1e-3).epochs
    3
    >>> try:
    ...     Settings(lr=float("nan"))
    ... except SettingError as error:
    ...     print(error.setting, "|", error.reason)
    lr | give a finite learning rate > 0, e.g. 3e-3.

`kbnn.train.train_and_save` takes these as keyword arguments, and `python -m
kbnn.train` as options of the same names (`--batch-size` for `batch_size`): a
bad value is refused with one line that names it, before data is read or a model
is built.
"""

import dataclasses
import math
import numbers
import os

from kbnn.layers import PRECISIONS
from kbnn.train.fit import PRECISION, STEPS_PER_EXECUTION
from kbnn.train.strategy import DISTRIBUTE_CHOICES

__all__ = ["SettingError", "Settings"]


class SettingError(ValueError):
    """A setting with a value it cannot take: `setting`, `value` and `reason` say which."""

    def __init__(self, setting, value, reason):
        super().__init__(f"{setting}={value!r}: {reason}")
        self.setting, self.value, self.reason = setting, value, reason


def _integer(value, minimum):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) \
        and value >= minimum


def _real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) \
        and math.isfinite(value)


def _cluster_size():
    """The number of processes $TF_CONFIG names (1 without it)."""
    import tensorflow as tf

    spec = tf.distribute.cluster_resolver.TFConfigClusterResolver().cluster_spec()
    return max(1, sum(spec.num_tasks(job) for job in spec.jobs))


@dataclasses.dataclass(frozen=True)
class Settings:
    """How to train: schedule, data handling, distillation, restart and averaging.

    See `kbnn.train.train_and_save` for what each does.
    """

    epochs: int = 30
    batch_size: int = 100
    lr: float = 3e-3
    seed: int = 0
    validation_size: int = 5000
    distribute: object = None
    flip: bool = False
    shift: int = 0
    jit_compile: bool = False
    steps_per_execution: int = STEPS_PER_EXECUTION
    precision: str = PRECISION
    teacher: object = None
    alpha: float = 0.5
    temperature: float = 2.0
    init: object = None
    ema: float = None
    data_dir: object = None

    def __post_init__(self):
        for name, ok, reason in self._checks():
            if not ok:
                raise SettingError(name, getattr(self, name), reason)

    def _checks(self):
        yield "epochs", _integer(self.epochs, 1), "train for at least 1 epoch."
        yield "batch_size", _integer(self.batch_size, 1), "give a batch size >= 1."
        yield "lr", _real(self.lr) and self.lr > 0, "give a finite learning rate > 0, e.g. 3e-3."
        yield "seed", _integer(self.seed, 0), "give an integer seed >= 0."
        yield ("validation_size", _integer(self.validation_size, 0),
               "give a number of held-out training images >= 0 (0: none).")
        yield ("distribute", self.distribute is None or self.distribute in DISTRIBUTE_CHOICES
               or not isinstance(self.distribute, str),
               f"use {' or '.join(DISTRIBUTE_CHOICES)} (or a tf.distribute.Strategy).")
        yield ("jit_compile", not (self.jit_compile and self.distribute == "multi_worker"
                                   and _cluster_size() > 1),
               "kbnn.train's multi-worker loop does not XLA-compile its step; drop --jit "
               "when training on several workers.")
        yield "shift", _integer(self.shift, 0), "give a shift in pixels >= 0."
        yield ("steps_per_execution", _integer(self.steps_per_execution, 1),
               f"give a number of training steps per call >= 1 (default "
               f"{STEPS_PER_EXECUTION}; 1 calls back after every batch).")
        yield ("precision", self.precision in PRECISIONS,
               f"use {', '.join(PRECISIONS)} (the forward product of binary x binary "
               f"layers; exact either way).")
        yield ("alpha", _real(self.alpha) and 0 <= self.alpha <= 1,
               "the weight of the distillation term is in [0, 1].")
        yield ("temperature", _real(self.temperature) and self.temperature > 0,
               "give a finite temperature > 0 (2-4 is usual).")
        yield ("ema", self.ema is None or (_real(self.ema) and 0 <= self.ema < 1),
               "give a moving-average momentum in [0, 1), e.g. 0.999.")
        for name in ("teacher", "init"):
            path = getattr(self, name)
            yield (name, not isinstance(path, (str, os.PathLike)) or os.path.isfile(path),
                   "no such file; give a .keras model saved by kbnn.train.")
