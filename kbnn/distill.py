"""Knowledge distillation: train a student (a BNN) to match a teacher's soft predictions.

>>> import keras
>>> from kbnn.distill import Distiller
>>> from kbnn.zoo import bnn_mlp, float_mlp
>>> distiller = Distiller(bnn_mlp((128,)), teacher=float_mlp((128,)), alpha=0.5, temperature=2.0)
>>> distiller.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
...                   metrics=["accuracy"])
>>> distiller.student.name   # after distiller.fit(...), use or save the student alone
'bnn_mlp_128_deterministic'

The loss while training is `(1 - alpha) * compiled_loss(labels, student)
+ alpha * temperature**2 * KL(softmax(teacher / T) || softmax(student / T))`
(Hinton et al., 2015); the teacher runs in inference mode and is never
trained. Evaluation and prediction use the student alone, so validation
numbers mean the same as without distillation.

When the training inputs are not augmented, the teacher's logits are the
same every epoch: `with_teacher_logits` computes them once and the dataset
carries them, as `((images, teacher_logits), labels)`, so an expensive
teacher (a CNN teaching an MLP) costs one pass instead of one per epoch.
"""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

__all__ = ["DistillationLoss", "Distiller", "distillation_loss", "with_teacher_logits"]


def distillation_loss(teacher_logits, student_logits, temperature):
    """Mean KL divergence between the temperature-softened predictions, times T^2.

    >>> from keras import ops
    >>> float(distillation_loss(ops.array([[1.0, 2.0]]), ops.array([[1.0, 2.0]]), 2.0))
    0.0

    The T^2 factor keeps the gradient scale independent of the temperature.
    """
    loss = DistillationLoss(temperature)
    return ops.mean(loss.call(ops.convert_to_tensor(teacher_logits),
                              ops.convert_to_tensor(student_logits)))


@keras.saving.register_keras_serializable(package="kbnn")
class DistillationLoss(keras.losses.Loss):
    """`distillation_loss` as a Keras loss: `loss(teacher_logits, student_logits)`.

    >>> from keras import ops
    >>> loss = DistillationLoss(temperature=2.0)
    >>> float(loss(ops.array([[1.0, 2.0]]), ops.array([[1.0, 2.0]])))
    0.0

    Being a `keras.losses.Loss`, it is divided by the number of replicas under a
    `tf.distribute` strategy, as the compiled loss is, so the two terms of a
    `Distiller`'s loss keep their weights on any number of replicas.
    """

    def __init__(self, temperature=2.0, name="distillation_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.temperature = float(temperature)

    def call(self, y_true, y_pred):
        teacher = ops.softmax(ops.divide(y_true, self.temperature), axis=-1)
        log_teacher = ops.log_softmax(ops.divide(y_true, self.temperature), axis=-1)
        log_student = ops.log_softmax(ops.divide(y_pred, self.temperature), axis=-1)
        kl = ops.sum(teacher * (log_teacher - log_student), axis=-1)
        return kl * self.temperature**2

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


class Distiller(keras.Model):
    """A student model trained against its labels and a frozen teacher's soft logits.

    Both models map the same inputs to logits of the same classes. Calling the
    distiller calls the student; `distiller.student` is the trained model.
    Training inputs may be `(images, teacher_logits)` pairs (`with_teacher_logits`):
    then those logits stand for the teacher's.
    """

    def __init__(self, student, teacher, alpha=0.5, temperature=2.0, **kwargs):
        super().__init__(name=kwargs.pop("name", f"{student.name}_distiller"), **kwargs)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha={alpha}: the weight of the distillation term must be "
                             f"in [0, 1] (0 = labels only, 1 = teacher only).")
        if temperature <= 0:
            raise ValueError(f"temperature={temperature}: use a positive temperature "
                             f"(1 = the teacher's own probabilities; 2-4 is usual).")
        if student.output_shape != teacher.output_shape:
            raise ValueError(f"Student {student.name!r} outputs {student.output_shape} but "
                             f"teacher {teacher.name!r} outputs {teacher.output_shape}; "
                             f"distillation needs logits of the same classes.")
        self.student, self.teacher = student, teacher
        self.teacher.trainable = False
        self.alpha, self.temperature = float(alpha), float(temperature)
        self._soft_loss = DistillationLoss(self.temperature)

    def call(self, inputs, training=None):
        if isinstance(inputs, (tuple, list)):  # (images, cached teacher logits)
            inputs = inputs[0]
        return self.student(inputs, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x, y, y_pred, sample_weight, training=training)
        if not training or self.alpha == 0.0:
            return loss
        if isinstance(x, (tuple, list)):
            teacher_logits = x[1]
        else:
            teacher_logits = self.teacher(x, training=False)
        soft = self._soft_loss(teacher_logits, y_pred)  # scaled per replica
        return (1.0 - self.alpha) * loss + self.alpha * soft


def with_teacher_logits(teacher, images, labels, *, batch_size, shuffle=True, seed=None):
    """A dataset of `((images, teacher_logits), labels)` batches for a `Distiller`.

    The teacher runs once, in inference mode, over `images`; use it when the
    training inputs are the same every epoch (no augmentation).

    >>> from kbnn.zoo import float_mlp
    >>> images, labels = np.zeros((6, 28, 28, 1), "float32"), np.arange(6) % 3
    >>> ds = with_teacher_logits(float_mlp((8,)), images, labels, batch_size=4, seed=0)
    >>> [(tuple(x.shape), tuple(t.shape)) for (x, t), y in ds]
    [((4, 28, 28, 1), (4, 10)), ((2, 28, 28, 1), (2, 10))]
    """
    logits = teacher.predict(images, batch_size=1000, verbose=0).astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices(((images, logits), labels))
    if shuffle:
        ds = ds.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
