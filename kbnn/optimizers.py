"""Optimizers: Keras 3's Adam with TensorFlow's fused update kernel.

>>> import keras, kbnn
>>> model = kbnn.zoo.bnn_mlp((128,))
>>> model.compile(kbnn.optimizers.Adam(1e-3),
...               keras.losses.SparseCategoricalCrossentropy(from_logits=True))

Keras 3 updates each variable with about ten separate element-wise ops; Keras 2
(and so Larq) called TensorFlow's fused `ResourceApplyAdam`, one pass over the
variable. For the 784x1024 kernel of the zoo MLPs that is a tenth of a training
step on CPU. `Adam` here computes exactly Keras 3's update (same formula,
same slots, same config) with the fused kernel, and falls back to Keras's own
update where the kernel does not apply (amsgrad, sparse gradients).
"""

import keras
import tensorflow as tf

__all__ = ["Adam"]


def _handle(variable):
    """The resource handle of a Keras or TensorFlow variable (per replica in updates)."""
    if isinstance(variable, keras.Variable):
        variable = variable.value
    return variable.handle


# The versions on which `_adam_slots` (Keras-private attributes) and `_handle`
# (a Keras variable's TensorFlow handle, per replica under a strategy) were
# checked; tests/test_optimizers.py fails on any other, so someone checks again.
_CHECKED_ON = {"keras": "3.15", "tensorflow": "2.21"}


def _adam_slots(optimizer, variable):
    """(momentum, velocity) of `variable` in a built Keras 3 Adam, or None.

    Keras 3 has no public accessor for an optimizer's per-variable slots, so
    this reads the private `_get_variable_index`, `_momentums` and
    `_velocities` of `keras.optimizers.Adam` (checked on the Keras of
    `_CHECKED_ON`) and nowhere else. None if they are gone, so the
    caller can fall back to Keras's own update.
    """
    try:
        index = optimizer._get_variable_index(variable)
        return optimizer._momentums[index], optimizer._velocities[index]
    except (AttributeError, KeyError, IndexError):
        return None


@keras.saving.register_keras_serializable(package="kbnn")
class Adam(keras.optimizers.Adam):
    """`keras.optimizers.Adam` whose dense updates run as one fused TensorFlow op."""

    def update_step(self, gradient, variable, learning_rate):
        slots = None
        if not (self.amsgrad or isinstance(gradient, tf.IndexedSlices)):
            slots = _adam_slots(self, variable)
        if slots is None:
            return super().update_step(gradient, variable, learning_rate)
        momentum, velocity = slots
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1 = tf.cast(self.beta_1, dtype)
        beta_2 = tf.cast(self.beta_2, dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=_handle(variable), m=_handle(momentum), v=_handle(velocity),
            beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2,
            epsilon=tf.cast(self.epsilon, dtype), grad=tf.cast(gradient, dtype),
            use_locking=False)
