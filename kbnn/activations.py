"""Larq's activations, same names: `hard_tanh` and `leaky_tanh`.

>>> import keras, kbnn
>>> layer = kbnn.layers.QuantDense(8, activation=kbnn.activations.leaky_tanh)
>>> kbnn.activations.leaky_tanh(np.array([-3.0, -0.5, 0.5, 2.0])).numpy()
array([-1.4, -0.5,  0.5,  1.2])

`hard_tanh` is Keras's own (`activation="hard_tanh"` works as a string);
`leaky_tanh` serializes into `.keras` files as a kbnn object, so pass the
function (a string names only Keras's activations).
"""

import keras
import tensorflow as tf

__all__ = ["hard_tanh", "leaky_tanh"]

hard_tanh = keras.activations.hard_tanh


@keras.saving.register_keras_serializable(package="kbnn")
def leaky_tanh(x, alpha=0.2):
    """Hard tanh with slope `alpha` (not 0) outside [-1, 1], as leaky ReLU.

    >>> kbnn.activations.leaky_tanh(np.array([-2.0, 0.3, 2.0]), alpha=0.5).numpy()
    array([-1.5,  0.3,  1.5])
    """
    x = tf.convert_to_tensor(x)
    return (tf.clip_by_value(x, -1.0, 1.0) + alpha * (tf.maximum(x, 1.0) - 1.0)
            + alpha * (tf.minimum(x, -1.0) + 1.0))
