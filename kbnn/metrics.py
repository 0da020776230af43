"""Larq's `FlipRatio`: the fraction of values that changed since the previous update.

>>> import kbnn
>>> m = kbnn.metrics.FlipRatio()
>>> m.update_state([1, 1])      # the first update only remembers the values
>>> m.update_state([2, 2])      # both changed: 1.0
>>> m.update_state([1, 2])      # one of two changed: mean (1.0 + 0.5) / 2
>>> float(m.result())
0.75

As a training metric of binary weights: give a kernel quantizer
`metrics=["flip_ratio"]` (or build the layers inside
`kbnn.context.metrics_scope(["flip_ratio"])`), and `fit` logs, per kernel,
the mean fraction of its quantized weights that flipped in a training step.
"""

import keras
import numpy as np
import tensorflow as tf

__all__ = ["FlipRatio"]


@keras.saving.register_keras_serializable(package="kbnn")
class FlipRatio(keras.metrics.Metric):
    """Mean over updates (from the second on) of the fraction of values that changed.

    Values are compared after a cast to `values_dtype` (int8 by default:
    right for +-1 and 0/1 values). `reset_state` restarts the mean but keeps
    the last values, so the next update still counts its flips (Larq skips
    it: with `fit` resetting metrics each epoch, it lost each epoch's first
    step).
    """

    def __init__(self, values_dtype="int8", name="flip_ratio", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.values_dtype = values_dtype
        self._previous_values = None

    def build(self, shape):
        """Create the state for values of `shape` (else the first update does, eagerly)."""
        shape = tuple(shape)
        self._size = float(np.prod(shape))
        self._previous_values = self.add_variable(
            shape, initializer="zeros", dtype=self.values_dtype, name="previous_values",
            aggregation="only_first_replica")
        self.total = self.add_variable((), initializer="zeros", name="total",
                                       aggregation="only_first_replica")
        self.count = self.add_variable((), initializer="zeros", name="count",
                                       aggregation="only_first_replica")
        self._seen = self.add_variable((), initializer="zeros", name="seen",  # not reset
                                       aggregation="only_first_replica")

    def update_state(self, values, sample_weight=None):
        values = tf.cast(tf.convert_to_tensor(values), self.values_dtype)
        if self._previous_values is None:
            with tf.init_scope():
                self.build(values.shape)
        unchanged = tf.reduce_sum(tf.cast(tf.equal(self._previous_values, values), self.dtype))
        compared = self._seen  # 0 at the very first update: nothing to compare with
        self.total.assign_add((1.0 - unchanged / self._size) * compared)
        self.count.assign_add(compared)
        self._seen.assign(1.0)
        self._previous_values.assign(values)

    def result(self):
        return tf.math.divide_no_nan(self.total, self.count)

    def reset_state(self):
        if self._previous_values is not None:
            self.total.assign(0.0)
            self.count.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "values_dtype": self.values_dtype}
