"""The Keras callbacks of a kbnn training: epoch seconds, best-validation weights, NaN stop.

Example:

    timer, best, nan = EpochTimer(), KeepBest(), StopOnNaN()
    model.fit(train, validation_data=val, epochs=5, callbacks=[timer, best, nan])
    timer.seconds, best.best_epoch, nan.stopped_at   # [s, ...], 3, None
"""

import time

import keras

__all__ = ["EpochTimer", "KeepBest", "StopOnNaN"]


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
