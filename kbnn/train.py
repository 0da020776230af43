"""`python -m kbnn.train`: train a zoo model on Fashion-MNIST and save it with its metrics.

    python -m kbnn.train bnn_mlp --hidden 1024 --binarization deterministic \\
        --epochs 30 --data-dir ../shared/data/fashion_mnist --out saved_models/bnn_mlp_1024_det

writes NAME.keras (the model), NAME.json (configuration, test accuracy, per-epoch
loss / accuracy / validation accuracy / seconds, peak memory) and NAME.png (learning
curves). The last `--validation-size` training images are held out; the epoch with
the best validation accuracy is kept (model selection never sees the test split),
and the test split is scored once, at the end.

The same from Python: `kbnn.train.train_and_save(...)`; `fit_model(...)` runs the
training loop alone.
"""

import argparse
import inspect
import json
import pathlib
import platform
import resource
import sys
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

import kbnn
from kbnn import optimizers, zoo
from kbnn.data import load_fashion_mnist
from kbnn.distill import Distiller, with_teacher_logits

__all__ = ["fit_model", "train_and_save", "main"]


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
        if logs["val_accuracy"] > self.best:
            self.best, self.best_epoch = logs["val_accuracy"], epoch + 1
            self.weights = self.model.get_weights()

    def on_train_end(self, logs=None):
        self.model.set_weights(self.weights)


def peak_memory_mb():
    """The process's resident-set high-water mark in MiB (Linux: ru_maxrss is KiB)."""
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def _strategy(distribute):
    if distribute is None:
        return tf.distribute.get_strategy()
    if isinstance(distribute, tf.distribute.Strategy):
        return distribute
    if distribute == "mirrored":
        return tf.distribute.MirroredStrategy()
    if distribute == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"distribute={distribute!r}: use None, 'mirrored', 'multi_worker' "
                     f"or a tf.distribute.Strategy.")


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


def fit_model(builder, model_args, train, val, *, epochs, lr, distribute=None,
              jit_compile=False, teacher=None, alpha=0.5, temperature=2.0, init=None,
              ema=None, verbose=1):
    """Build `zoo.BUILDERS[builder](**model_args)`, compile and fit it.

    Adam with a cosine decay of the learning rate to 0, cross-entropy on
    logits, and the best-validation epoch restored (the last epoch when `val`
    is None). With a `teacher` (a model or a .keras path) the loss also pulls
    the model towards the teacher's softened logits (`kbnn.distill`). With
    `init` (a model or a .keras path of the same architecture) training starts
    from its weights: a further cycle of the schedule. With `ema` (a momentum
    such as 0.999) validation, the kept epoch and the result use the
    exponential moving average of the weights (Polyak averaging): for a BNN it
    steadies the signs of latent weights that hover around zero. Returns the
    model, its `History`, the per-epoch seconds and the kept epoch.
    """
    steps = int(train.cardinality())
    strategy = _strategy(distribute)  # one strategy: a second one would collide on collectives
    with strategy.scope():
        model = student = zoo.BUILDERS[builder](**model_args)
        if init is not None:
            _load_weights_from(student, init)
        if teacher is not None:
            model = Distiller(student, _as_model(teacher), alpha=alpha, temperature=temperature)
        schedule = keras.optimizers.schedules.CosineDecay(lr, decay_steps=epochs * steps)
        model.compile(
            optimizers.Adam(schedule, use_ema=ema is not None,
                            ema_momentum=0.99 if ema is None else ema),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            jit_compile=jit_compile,
        )
    timer, best = EpochTimer(), KeepBest()
    callbacks = [timer] if val is None else [timer, best]
    if ema is not None:  # first, so validation and KeepBest see the averaged weights
        callbacks.insert(0, keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    history = model.fit(train, validation_data=val, epochs=epochs, callbacks=callbacks,
                        verbose=verbose, shuffle=False)  # the dataset shuffles itself
    if student is not model:  # evaluate the student as it is saved: on its own
        with strategy.scope():
            student.compile(loss=model.loss, metrics=["accuracy"])
    return student, history, timer.seconds, epochs if val is None else best.best_epoch


def _as_model(model_or_path):
    if isinstance(model_or_path, keras.Model):
        return model_or_path
    return keras.saving.load_model(model_or_path, compile=False)


def _init_record(init):
    """The JSON's record of `init`: the file, and its training when its JSON lies beside it."""
    if init is None or isinstance(init, keras.Model):
        return None if init is None else {"model": init.name}
    path = pathlib.Path(init)
    record = {"file": path.name}
    if path.with_suffix(".json").exists():
        record["training"] = json.loads(path.with_suffix(".json").read_text())["training"]
    return record


def _load_weights_from(model, source):
    """Copy the weights of `source` (a model or a .keras path) into `model`."""
    source = _as_model(source)
    theirs = [tuple(w.shape) for w in source.weights]
    ours = [tuple(w.shape) for w in model.weights]
    if theirs != ours:
        raise ValueError(
            f"Cannot start {model.name!r} from {source.name!r}: their weights differ "
            f"({len(ours)} tensors {ours[:4]}... vs {len(theirs)} tensors {theirs[:4]}...). "
            "Pass the same model options (--hidden, --filters, --dense-units) as the "
            "model in --init was trained with.")
    model.set_weights(source.get_weights())


def _plot(history, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = np.arange(1, len(history["loss"]) + 1)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, history["loss"], label="train")
    if "val_loss" in history:
        ax_loss.plot(epochs, history["val_loss"], label="validation")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.plot(epochs, 100 * (1 - np.array(history["accuracy"])), label="train")
    if "val_accuracy" in history:
        ax_acc.plot(epochs, 100 * (1 - np.array(history["val_accuracy"])), label="validation")
    ax_acc.set(xlabel="epoch", ylabel="error (%)", title="error")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _builder_arguments(builder, model_args):
    """All architecture arguments of a zoo builder call, defaults included (JSON-ready)."""
    bound = inspect.signature(zoo.BUILDERS[builder]).bind(**model_args)
    bound.apply_defaults()
    return {k: list(v) if isinstance(v, tuple) else v for k, v in bound.arguments.items()
            if k not in ("seed", "weights", "name")}


def inference_copy(model):
    """An uncompiled copy of `model` with its weights: saved without optimizer state,
    so a released .keras file holds the model alone (a third of an Adam-compiled one)."""
    copy = type(model).from_config(model.get_config())  # clone_model keeps compile state
    copy.set_weights(model.get_weights())
    return copy


def _write_outputs(out, writers):
    """Write every `suffix -> write(path)` into a temporary directory beside `out`,
    then rename them all into place: a failure leaves no partial set of files."""
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        staged = {}
        for suffix, write in writers.items():
            staged[suffix] = pathlib.Path(tmp) / (out.name + suffix)
            write(staged[suffix])
        for suffix, path in staged.items():
            path.replace(out.parent / (out.name + suffix))


def _is_chief(strategy):
    """Whether this process writes the outputs (the chief, or worker 0 without one)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    return (resolver.task_type == "worker" and resolver.task_id == 0
            and "chief" not in resolver.cluster_spec().as_dict())


def train_and_save(builder, model_args, out=None, *, epochs=30, batch_size=100, lr=3e-3,
                   seed=0, data_dir=None, validation_size=5000, distribute=None,
                   flip=False, shift=0, jit_compile=False, teacher=None, alpha=0.5,
                   temperature=2.0, init=None, ema=None, verbose=1):
    """Train a zoo model and write OUT.keras, OUT.json and OUT.png; return the metrics.

    `out` defaults to saved_models/<model name> (`kbnn.zoo.models_dir()`), where
    `weights="fashion_mnist"` finds it, and refuses to replace a model already there
    (pass `out` for that). `distribute` is None, "mirrored",
    "multi_worker" or a `tf.distribute.Strategy`; with several workers only the
    chief writes. `teacher` (a .keras path or a model) is distilled into the model
    (`fit_model`); without augmentation its logits are computed once
    (`kbnn.distill.with_teacher_logits`). `init` (a .keras path or a model) gives
    the starting weights; `ema` a weight-averaging momentum (`fit_model`).
    With `validation_size=0` it trains on all training images and keeps the
    last epoch: the second stage of a recipe whose settings (epochs included)
    were chosen on a validation run.
    """
    strategy = _strategy(distribute)  # first: multi-worker collectives need it at startup
    out = pathlib.Path(out) if out is not None else _default_out(builder, model_args)
    keras.utils.set_random_seed(seed)  # after _default_out's model: same weights either way
    if "binarization" in model_args and model_args.get("seed") is None:
        model_args = {**model_args, "seed": seed}
    split = dict(validation_size=validation_size, subset="training") if validation_size else {}
    teacher_name = None
    if teacher is not None:  # loaded once, in the strategy that trains with it
        teacher_name = (teacher.name if isinstance(teacher, keras.Model)
                        else pathlib.Path(teacher).name)
        with strategy.scope():
            teacher = _as_model(teacher)
    cache_teacher = teacher is not None and not (flip or shift)
    if cache_teacher:  # the inputs are the same every epoch: run the teacher once
        images, labels = load_fashion_mnist("train", data_dir=data_dir, as_numpy=True, **split)
        train = with_teacher_logits(teacher, images, labels, batch_size=batch_size, seed=seed)
    else:
        train = load_fashion_mnist("train", data_dir=data_dir, batch_size=batch_size,
                                   shuffle=True, seed=seed, **split)
    if flip or shift:
        train = augment(train, flip=flip, shift=shift, seed=seed)
    val = load_fashion_mnist("train", data_dir=data_dir, validation_size=validation_size,
                             subset="validation", batch_size=1000) if validation_size else None
    test = load_fashion_mnist("test", data_dir=data_dir, batch_size=1000)

    model, history, seconds, best_epoch = fit_model(
        builder, model_args, train, val, epochs=epochs, lr=lr, distribute=strategy,
        jit_compile=jit_compile, teacher=teacher, alpha=alpha, temperature=temperature,
        init=init, ema=ema, verbose=verbose)
    if out.suffix == ".keras":  # `--out x.keras` names the set x.keras / x.json / x.png
        out = out.with_suffix("")
    test_loss, test_accuracy = model.evaluate(test, verbose=0)
    bits = kbnn.summary(model, print_fn=None)
    saved_args = _builder_arguments(builder, model_args)
    metrics = {
        "name": out.name,
        "model": {"builder": builder, **saved_args},
        "training": dict(epochs=epochs, batch_size=batch_size, lr=lr,
                         schedule="cosine decay to 0", optimizer="adam", seed=seed,
                         validation_size=validation_size,
                         distribute=distribute if isinstance(distribute, (str, type(None)))
                         else type(distribute).__name__,
                         flip=flip, shift=shift, jit_compile=jit_compile,
                         distillation=None if teacher is None else dict(
                             teacher=teacher_name, alpha=alpha, temperature=temperature,
                             teacher_logits="computed once" if cache_teacher else "every step"),
                         init=_init_record(init), ema=ema),
        "test_accuracy": float(test_accuracy),
        "test_loss": float(test_loss),
        "best_epoch": best_epoch,
        "best_val_accuracy": float(max(history.history["val_accuracy"])) if val else None,
        "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
        "epoch_seconds": seconds,
        "peak_memory_mb": peak_memory_mb(),
        "params_1bit": bits.params_1bit,
        "params_32bit": bits.params_32bit,
        "memory_bytes": bits.memory_bytes,
        "float32_memory_bytes": bits.float32_memory_bytes,
        "versions": {"python": platform.python_version(), "tensorflow": tf.__version__,
                     "keras": keras.__version__, "kbnn": kbnn.__version__},
    }
    metrics["out"] = str(out)
    if _is_chief(strategy):
        out.parent.mkdir(parents=True, exist_ok=True)
        title = f"{out.name}: test accuracy {100 * test_accuracy:.2f}%"
        _write_outputs(out, {
            ".keras": inference_copy(model).save,
            ".png": lambda p: _plot(history.history, p, title),
            ".json": lambda p: p.write_text(json.dumps(metrics, indent=1) + "\n"),
        })
    return metrics


def _default_out(builder, model_args):
    """saved_models/<model name>, before training: an error if a model is already there."""
    out = zoo.models_dir() / zoo.BUILDERS[builder](**model_args).name
    if out.with_suffix(".keras").exists():
        raise FileExistsError(
            f"{out}.keras exists already; training without an output path would replace "
            f"it. Pass --out (out=) to write elsewhere, e.g. --out runs/{out.name}, or "
            f"--out {out} to replace it on purpose.")
    return out


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except for options whose default is the builder's own."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m kbnn.train", description=__doc__.splitlines()[0],
        formatter_class=_HelpFormatter)
    builders = "(default: the builder's, see kbnn.zoo)"
    parser.add_argument("model", choices=sorted(zoo.BUILDERS))
    parser.add_argument("--hidden", type=int, nargs="+", help=f"MLP hidden units {builders}")
    parser.add_argument("--filters", type=int, nargs="+",
                        help=f"CNN filters per block {builders}")
    parser.add_argument("--dense-units", type=int, help=f"CNN dense layer width {builders}")
    parser.add_argument("--shortcuts", action="store_const", const=True,
                        help="bnn_cnn: real-valued shortcuts around the binary convolutions "
                             "(Bi-Real Net)")
    parser.add_argument("--binarization", choices=["deterministic", "stochastic"],
                        help=f"activation binarizer of bnn_* models {builders}")
    parser.add_argument("--dropout", type=float,
                        help=f"dropout before the classifier {builders}")
    parser.add_argument("--input-dropout", type=float,
                        help=f"MLP dropout on the pixels {builders}")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs")
    parser.add_argument("--batch-size", type=int, default=100, help="batch size")
    parser.add_argument("--lr", type=float, default=3e-3, help="peak Adam learning rate")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of initialization, shuffling, dropout and augmentation")
    parser.add_argument("--data-dir", help="IDX directory (else $KBNN_DATA_DIR, else tfds)")
    parser.add_argument("--validation-size", type=int, default=5000,
                        help="hold out the last N training images to pick the best epoch; "
                        "0 trains on all 60k and keeps the last epoch")
    parser.add_argument("--distribute", choices=["mirrored", "multi_worker"],
                        help="train under MirroredStrategy (all local devices) or "
                        "MultiWorkerMirroredStrategy (machines from TF_CONFIG)")
    parser.add_argument("--flip", action="store_true", help="augment: random h-flips")
    parser.add_argument("--shift", type=int, default=0, help="augment: random shifts (px)")
    parser.add_argument("--teacher", help="distill from this .keras model (e.g. the float twin)")
    parser.add_argument("--alpha", type=float, default=0.5,
                        help="weight of the distillation term (with --teacher)")
    parser.add_argument("--temperature", type=float, default=2.0,
                        help="softmax temperature of the distillation term (with --teacher)")
    parser.add_argument("--init", help="start from this .keras model's weights (same "
                        "architecture): a second cycle of the learning-rate schedule")
    parser.add_argument("--ema", type=float, metavar="MOMENTUM",
                        help="validate and keep the moving average of the weights "
                        "(e.g. 0.999)")
    parser.add_argument("--jit", dest="jit_compile", action="store_true",
                        help="XLA-compile the training step (slower on CPU here)")
    parser.add_argument("--out", help="output path without suffix "
                        "(default: saved_models/<model name>, if no model is there yet)")
    parser.add_argument("--quiet", action="store_true",
                        help="one line per epoch instead of the progress bar (for logs)")
    return parser


def main(argv=None):
    args = _parser().parse_args(argv)
    options = {"hidden": "hidden_units", "filters": "filters", "dense_units": "dense_units",
               "binarization": "binarization", "dropout": "dropout",
               "input_dropout": "input_dropout", "shortcuts": "shortcuts"}
    model_args = {arg: getattr(args, opt) for opt, arg in options.items()
                  if getattr(args, opt) is not None}
    try:  # check the options fit the model without building it
        inspect.signature(zoo.BUILDERS[args.model]).bind(**model_args)
    except TypeError as error:
        _parser().error(f"{args.model} does not take that option ({error}).")
    try:
        metrics = train_and_save(
            args.model, model_args, args.out, epochs=args.epochs, batch_size=args.batch_size,
            lr=args.lr, seed=args.seed, data_dir=args.data_dir,
            validation_size=args.validation_size, distribute=args.distribute,
            flip=args.flip, shift=args.shift, jit_compile=args.jit_compile,
            teacher=args.teacher, alpha=args.alpha, temperature=args.temperature,
            init=args.init, ema=args.ema, verbose=2 if args.quiet else 1)
    except FileExistsError as error:
        _parser().error(str(error))
    print(f"{metrics['name']}: test accuracy {100 * metrics['test_accuracy']:.2f}% "
          f"(best epoch {metrics['best_epoch']}/{args.epochs}); "
          f"wrote {metrics['out']}.keras/.json/.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
