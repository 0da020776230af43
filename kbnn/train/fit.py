"""Fit a zoo model: Adam with cosine decay, best-validation epoch, distillation, restarts.

Example:

    from kbnn.data import load_fashion_mnist
    from kbnn.train import fit_model

    train = load_fashion_mnist("train", validation_size=5000, subset="training",
                               batch_size=100, shuffle=True, seed=0)
    val = load_fashion_mnist("train", validation_size=5000, subset="validation",
                             batch_size=1000)
    fitted = fit_model("bnn_mlp", {"hidden_units": (128,)}, train, val, epochs=2, lr=3e-3)
    fitted.model, fitted.best_epoch, fitted.history.history["val_accuracy"]
"""

import collections

import keras
import tensorflow as tf

from kbnn import optimizers, zoo
from kbnn.distill import Distiller
from kbnn.layers import set_compute
from kbnn.train import multi_worker
from kbnn.train.callbacks import EpochTimer, KeepBest, StopOnNaN, TrainingMemory
from kbnn.train.strategy import is_multi_worker, make_strategy

__all__ = ["STEPS_PER_EXECUTION", "Fitted", "TrainingDiverged", "TrainingError", "augment",
           "as_model", "compile_model", "fit_model", "inference_copy", "load_weights_from"]

# Training steps per call of the compiled step: one call per batch costs Keras 3
# about 1.5-2 ms of Python and executor work, a fifth of a step of the zoo MLPs
# on a 2-core CPU. Callbacks then see every 50th batch (a NaN loss is caught at
# most 49 batches late; the loss is an epoch mean, so it stays NaN).
STEPS_PER_EXECUTION = 50
# The forward product of the binary x binary layers (`kbnn.layers.set_compute`):
# bit-identical to float32 either way, so the faster one is the default. "auto":
# bfloat16 for binary convolutions on CPUs with bfloat16 instructions, float32 for
# dense layers (`kbnn.layers.auto_compute` has the measurements).
PRECISION = "auto"

Fitted = collections.namedtuple("Fitted", "model history seconds best_epoch training_memory_mb")
Fitted.__doc__ = """What `fit_model` returns: the trained model (the student when
distilling), its `keras.callbacks.History`, the seconds of each epoch, the kept
epoch (1-based) and the training memory in MiB (`TrainingMemory`: peak RSS during
the fit minus RSS before it; None where it cannot be read)."""


class TrainingError(RuntimeError):
    """A training that cannot go on or produced nothing usable; the message says why."""


class TrainingDiverged(TrainingError):
    """The training loss became NaN or infinite."""


def compile_model(model, learning_rate, *, ema=None, jit_compile=False,
                  steps_per_execution=STEPS_PER_EXECUTION):
    """Compile `model` as kbnn.train trains: fused Adam, cross-entropy on logits, accuracy.

    >>> model = kbnn.zoo.bnn_mlp((128,))
    >>> compile_model(model, 1e-3).steps_per_execution
    50

    `learning_rate` is a number or a schedule; `ema` a weight-averaging momentum
    (None: none). `kbnn.optimizers.Adam` is Keras 3's Adam with one fused update
    per variable; `steps_per_execution` runs that many steps per call.
    """
    model.compile(
        optimizers.Adam(learning_rate, use_ema=ema is not None,
                        ema_momentum=0.99 if ema is None else ema),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )
    return model


def fit_model(builder, model_args, train, val, *, epochs, lr, distribute=None,
              jit_compile=False, teacher=None, alpha=0.5, temperature=2.0, init=None,
              ema=None, steps_per_execution=STEPS_PER_EXECUTION, precision=PRECISION,
              verbose=1):
    """Build `zoo.BUILDERS[builder](**model_args)`, compile and fit it; return `Fitted`.

    Adam with a cosine decay of the learning rate to 0, cross-entropy on
    logits, and the best-validation epoch restored (the last epoch when `val`
    is None). With a `teacher` (a model or a .keras path) the loss also pulls
    the model towards the teacher's softened logits (`kbnn.distill`). With
    `init` (a model or a .keras path of the same architecture) training starts
    from its weights: a further cycle of the schedule. With `ema` (a momentum
    such as 0.999) validation, the kept epoch and the result use the
    exponential moving average of the weights (Polyak averaging): for a BNN it
    steadies the signs of latent weights that hover around zero. A loss that
    becomes NaN or infinite stops the training (Keras' `TerminateOnNaN`) and
    raises `TrainingDiverged`. `steps_per_execution` training steps run per
    call (`compile_model`; 1 on several replicas of one process); `precision` is the
    `compute` of the binary layers ("float32", "bfloat16" or "auto": per layer,
    bit-identical results; `kbnn.layers.set_compute`).
    """
    steps = int(train.cardinality())
    if steps == 0:
        raise TrainingError("the training data is empty: no batch to train on.")
    strategy = make_strategy(distribute)  # one strategy: a second collides on collectives
    with strategy.scope():
        model = student = zoo.BUILDERS[builder](**model_args)
        set_compute(student, precision)
        if init is not None:
            load_weights_from(student, init)
        if teacher is not None:
            model = Distiller(student, as_model(teacher), alpha=alpha, temperature=temperature)
        schedule = keras.optimizers.schedules.CosineDecay(lr, decay_steps=epochs * steps)
        if strategy.num_replicas_in_sync > 1 and not is_multi_worker(strategy):
            # Keras 3.15's multi-step loop fails on several replicas (an unfed
            # placeholder in its while loop, float models too): one step a call.
            # kbnn.train.multi_worker's loop runs several.
            steps_per_execution = 1
        compile_model(model, schedule, ema=ema, jit_compile=jit_compile,
                      steps_per_execution=steps_per_execution)
    timer, best, nan, memory = EpochTimer(), KeepBest(), StopOnNaN(), TrainingMemory()
    callbacks = [nan, timer, memory] if val is None else [nan, timer, memory, best]
    if ema is not None:  # first, so validation and KeepBest see the averaged weights
        callbacks.insert(0, keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    if is_multi_worker(strategy):  # Keras' fit cannot train there (keras-team/keras#20585)
        history = multi_worker.fit(model, strategy, train, val, epochs=epochs,
                                   callbacks=callbacks, verbose=verbose)
    else:
        history = model.fit(train, validation_data=val, epochs=epochs, callbacks=callbacks,
                            verbose=verbose, shuffle=False)  # the dataset shuffles itself
    if nan.stopped_at is not None:
        epoch, batch = nan.stopped_at
        raise TrainingDiverged(
            f"the training loss became {history.history['loss'][-1]} at epoch {epoch}, "
            f"batch {batch}, so training stopped; lower the learning rate (lr={lr}) or "
            f"check the data for non-finite values.")
    if student is not model:  # evaluate the student as it is saved: on its own
        with strategy.scope():
            student.compile(loss=model.loss, metrics=["accuracy"])
    return Fitted(student, history, timer.seconds, epochs if val is None else best.best_epoch,
                  memory.training_mb)


def augment(dataset, flip=True, shift=0, seed=None):
    """Random horizontal flips and shifts of up to `shift` pixels, per image.

    Applied to the training batches only; the model itself stays free of
    preprocessing layers, so exports and released models see plain images.
    """

    def transform(images, labels):
        if flip:
            images = tf.image.random_flip_left_right(images, seed=seed)
        if shift:
            size = tf.shape(images)[1:3]
            padded = tf.pad(images, [[0, 0], [shift, shift], [shift, shift], [0, 0]])
            images = tf.map_fn(
                lambda im: tf.image.random_crop(im, tf.concat([size, [1]], 0), seed=seed),
                padded)
        return images, labels

    return dataset.map(transform, num_parallel_calls=tf.data.AUTOTUNE)


def as_model(model_or_path):
    """`model_or_path` itself, or the model of a .keras file (uncompiled)."""
    if isinstance(model_or_path, keras.Model):
        return model_or_path
    return keras.saving.load_model(model_or_path, compile=False)


def load_weights_from(model, source):
    """Copy the weights of `source` (a model or a .keras path) into `model`."""
    source = as_model(source)
    theirs = [tuple(w.shape) for w in source.weights]
    ours = [tuple(w.shape) for w in model.weights]
    if theirs != ours:
        raise ValueError(
            f"Cannot start {model.name!r} from {source.name!r}: their weights differ "
            f"({len(ours)} tensors {ours[:4]}... vs {len(theirs)} tensors {theirs[:4]}...). "
            "Pass the same model options (--hidden, --filters, --dense-units) as the "
            "model in --init was trained with.")
    model.set_weights(source.get_weights())


def inference_copy(model):
    """An uncompiled copy of `model` with its weights: saved without optimizer state,
    so a released .keras file holds the model alone (a third of an Adam-compiled one)."""
    copy = type(model).from_config(model.get_config())  # clone_model keeps compile state
    copy.set_weights(model.get_weights())
    return copy

