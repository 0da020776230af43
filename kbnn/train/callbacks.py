"""The Keras callbacks of a kbnn training: epoch seconds, best-validation weights, NaN
stop, training memory.

Example:

    timer, best, nan, memory = EpochTimer(), KeepBest(), StopOnNaN(), TrainingMemory()
    model.fit(train, validation_data=val, epochs=5, callbacks=[timer, best, nan, memory])
    timer.seconds, best.best_epoch, nan.stopped_at   # [s, ...], 3, None
    memory.training_mb, memory.peak_mb               # 41.3, 1093.0
"""

import resource
import sys
import threading
import time

import keras

__all__ = ["EpochTimer", "KeepBest", "StopOnNaN", "TrainingMemory"]


class EpochTimer(keras.callbacks.Callback):
    """Records the wall-clock seconds of each epoch."""

    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


class KeepBest(keras.callbacks.Callback):
    """Keeps the weights of the epoch with the best validation accuracy."""

    def on_train_begin(self, logs=None):
        self.best, self.best_epoch, self.weights = -1.0, None, None

    def on_epoch_end(self, epoch, logs=None):
        if logs["val_accuracy"] > self.best:  # False for NaN: a NaN epoch is never kept
            self.best, self.best_epoch = logs["val_accuracy"], epoch + 1
            self.weights = self.model.get_weights()

    def on_train_end(self, logs=None):
        if self.weights is not None:
            self.model.set_weights(self.weights)


class StopOnNaN(keras.callbacks.TerminateOnNaN):
    """Keras' `TerminateOnNaN` that remembers where: `stopped_at` is (epoch, batch), 1-based."""

    def on_train_begin(self, logs=None):
        self.stopped_at, self._epoch = None, 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch + 1

    def on_batch_end(self, batch, logs=None):
        super().on_batch_end(batch, logs)
        if self.model.stop_training and self.stopped_at is None:
            self.stopped_at = (self._epoch, batch + 1)


def _rss_mb():
    """The process's resident set now, in MiB (None where /proc is missing)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:
        return None


def _peak_rss_mb():
    """The process's resident-set high-water mark in MiB (ru_maxrss: KiB; bytes on macOS)."""
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


class TrainingMemory(keras.callbacks.Callback):
    """The memory a `fit` adds: peak RSS during it minus RSS just before it, in MiB.

    Most of a process's RSS is the framework and the data, the same for a BNN
    and its float twin; `training_mb` is what training itself holds (weights,
    optimizer state, activations kept for the backward pass, traced steps).
    `peak_mb` is the process's peak RSS during the fit. When the process's
    high-water mark rises during the fit it is that peak exactly; otherwise
    the peak is sampled every `interval` seconds (Linux; None elsewhere).
    """

    def __init__(self, interval=0.01):
        super().__init__()
        self.interval = interval
        self.before_mb = self.peak_mb = self.training_mb = None

    def on_train_begin(self, logs=None):
        self.before_mb, self._high_water = _rss_mb(), _peak_rss_mb()
        self._sampled, self._stop = self.before_mb, threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        if self.before_mb is not None:
            self._sampler.start()

    def _sample(self):
        while not self._stop.wait(self.interval):
            self._sampled = max(self._sampled, _rss_mb())

    def on_train_end(self, logs=None):
        self._stop.set()
        if self._sampler.is_alive():
            self._sampler.join()
        if self.before_mb is None:
            return
        high_water = _peak_rss_mb()
        self.peak_mb = high_water if high_water > self._high_water \
            else max(self._sampled, _rss_mb())
        self.training_mb = self.peak_mb - self.before_mb
