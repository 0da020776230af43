"""Weight constraints for binary networks.

>>> import numpy as np, kbnn
>>> layer = kbnn.layers.QuantDense(8, kernel_quantizer="ste_sign",
...                                kernel_constraint="weight_clip")
>>> kbnn.constraints.WeightClip(0.5)(np.array([-2.0, 0.2, 3.0])).numpy()
array([-0.5,  0.2,  0.5])
"""

import keras
import tensorflow as tf

from kbnn.larq_config import from_larq_dict

__all__ = ["WeightClip", "get"]


@keras.saving.register_keras_serializable(package="kbnn")
class WeightClip(keras.constraints.Constraint):
    """Clips weights to [-clip_value, clip_value] after each update.

    Keeps the latent real weights of a binary kernel where the
    straight-through gradient still reaches them (BinaryNet).
    """

    def __init__(self, clip_value=1.0):
        self.clip_value = clip_value

    def __call__(self, w):
        # TensorFlow's ClipByValue kernel: one pass over the weights, where
        # keras.ops.clip (a minimum, then a maximum) takes two.
        w = tf.convert_to_tensor(w)
        return tf.raw_ops.ClipByValue(t=w, clip_value_min=tf.constant(-self.clip_value, w.dtype),
                                      clip_value_max=tf.constant(self.clip_value, w.dtype))

    def get_config(self):
        return {"clip_value": self.clip_value}


def get(identifier):
    """The constraint for `identifier`: "weight_clip", or anything Keras accepts.

    >>> kbnn.constraints.get("weight_clip").clip_value
    1.0
    """
    if isinstance(identifier, str) and identifier in ("weight_clip", "WeightClip"):
        return WeightClip()
    larq = from_larq_dict(identifier, {"WeightClip": WeightClip})
    return larq if larq is not None else keras.constraints.get(identifier)
