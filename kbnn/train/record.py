"""The record of a training run (NAME.json) and its learning curves (NAME.png).

Example, re-rendering a released model's curves from its JSON (and the JSONs of its
earlier cycles, where they are found beside it or in `search`):

    from kbnn.train.record import replot

    replot("saved_models/bnn_cnn_deterministic.json", search=["runs"])

A record holds the model's name and builder arguments, the training settings (with,
for a run started from another model by `init`, that model's file and training, so
a multi-cycle release records its whole chain), the test accuracy and loss, the kept
epoch, the per-epoch history and seconds, peak memory, bit counts and versions. It
is strict JSON: a non-finite number is written as null.
"""

import json
import math
import pathlib
import platform
import resource
import sys

import keras
import numpy as np

import kbnn
from kbnn.files import staged_outputs

__all__ = ["curves_title", "cycle_chain", "dumps", "init_record", "peak_memory_mb",
           "plot_curves", "replot", "run_record", "strict_json", "training_record"]


def peak_memory_mb():
    """The process's resident-set high-water mark in MiB (Linux: ru_maxrss is KiB)."""
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def training_record(settings, *, teacher_name=None, cache_teacher=False):
    """The "training" section: the `Settings` of the run, as JSON values."""
    distribute = settings.distribute
    return dict(
        epochs=settings.epochs, batch_size=settings.batch_size, lr=settings.lr,
        schedule="cosine decay to 0", optimizer="adam", seed=settings.seed,
        validation_size=settings.validation_size,
        distribute=distribute if isinstance(distribute, (str, type(None)))
        else type(distribute).__name__,
        flip=settings.flip, shift=settings.shift, jit_compile=settings.jit_compile,
        steps_per_execution=settings.steps_per_execution, precision=settings.precision,
        distillation=None if settings.teacher is None else dict(
            teacher=teacher_name, alpha=settings.alpha, temperature=settings.temperature,
            teacher_logits="computed once" if cache_teacher else "every step"),
        init=init_record(settings.init), ema=settings.ema)


def init_record(init):
    """The record of `init`: the file, and its training when its JSON lies beside it."""
    if init is None or isinstance(init, keras.Model):
        return None if init is None else {"model": init.name}
    path = pathlib.Path(init)
    record = {"file": path.name}
    if path.with_suffix(".json").exists():
        record["training"] = json.loads(path.with_suffix(".json").read_text())["training"]
    return record


def run_record(name, model_record, training, fitted, evaluation, out):
    """The whole record of a run: `fitted` is `fit_model`'s result, `evaluation` the
    test (loss, accuracy), `model_record` the builder and its arguments."""
    history = fitted.history.history
    bits = kbnn.summary(fitted.model, print_fn=None)
    val = history.get("val_accuracy")
    return strict_json({
        "name": name,
        "model": model_record,
        "training": training,
        "test_accuracy": evaluation[1],
        "test_loss": evaluation[0],
        "best_epoch": fitted.best_epoch,
        "best_val_accuracy": max(val) if val else None,
        "history": history,
        "epoch_seconds": fitted.seconds,
        "peak_memory_mb": peak_memory_mb(),
        "training_memory_mb": fitted.training_memory_mb,
        "params_1bit": bits.params_1bit,
        "params_32bit": bits.params_32bit,
        "memory_bytes": bits.memory_bytes,
        "float32_memory_bytes": bits.float32_memory_bytes,
        "versions": {"python": platform.python_version(), "tensorflow": _tf_version(),
                     "keras": keras.__version__, "kbnn": kbnn.__version__},
        "out": str(out),
    })


def _tf_version():
    import tensorflow as tf

    return tf.__version__


def strict_json(value):
    """`value` with NumPy numbers as Python ones and non-finite floats as None.

    >>> strict_json({"loss": [0.5, float("nan")], "n": np.int64(3)})
    {'loss': [0.5, None], 'n': 3}
    """
    if isinstance(value, dict):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if isinstance(value, (np.generic, np.ndarray)) and np.ndim(value) == 0:
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value


def dumps(record):
    """The record as strict JSON text (never a bare NaN or Infinity)."""
    return json.dumps(strict_json(record), indent=1, allow_nan=False) + "\n"


def cycle_chain(record, search=()):
    """The cycles of a run, oldest first: [(record or None, training section)].

    A run started from another model (`init`) follows the chain of starting files;
    each earlier cycle's full record is the JSON of its file when found in `search`
    (directories), else only its recorded training settings are known.
    """
    chain, training = [(record, record["training"])], record["training"]
    while training.get("init"):
        init = training["init"]
        found = _find_record(init.get("file"), search)
        training = found["training"] if found else init.get("training")
        if training is None:
            break
        chain.insert(0, (found, training))
    return chain


def _find_record(file, search):
    if not file:
        return None
    for directory in search:
        path = pathlib.Path(directory) / pathlib.Path(file).with_suffix(".json").name
        if path.is_file():
            return json.loads(path.read_text())
    return None


def plot_curves(record, path, search=()):
    """Draw the loss and error curves of `record` (all its cycles) into the PNG `path`.

    The title is the model's name and test accuracy; cycles are drawn one after the
    other on one epoch axis, and an earlier cycle whose record is not found is a
    shaded span of its recorded number of epochs.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chain = cycle_chain(record, search)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    start = 0
    for i, (cycle, training) in enumerate(chain):
        epochs = training["epochs"]
        if i:
            for ax in (ax_loss, ax_acc):
                ax.axvline(start + 0.5, color="grey", linestyle=":", linewidth=1)
        if cycle is None:
            for ax in (ax_loss, ax_acc):
                ax.axvspan(start + 0.5, start + epochs + 0.5, color="grey", alpha=0.12)
                ax.text(start + epochs / 2 + 0.5, 0.5, f"cycle {i + 1}\n{epochs} epochs\n"
                        "(curves not\nrecorded)", transform=ax.get_xaxis_transform(),
                        ha="center", va="center", fontsize=8, color="grey")
        else:
            _plot_cycle(ax_loss, ax_acc, cycle, start, first=not any(
                c is not None for c, _ in chain[:i]))
        start += epochs
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="error (%)", title="error")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
        ax.set_xlim(0.5, start + 0.5)
    fig.suptitle(curves_title(record, chain))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def curves_title(record, chain):
    """The title of the curves: the model's name, its cycles and its test accuracy.

    >>> curves_title({"name": "bnn_cnn_deterministic", "test_accuracy": 0.9292},
    ...              [(None, {"epochs": 20}), (None, {"epochs": 15})])
    'bnn_cnn_deterministic, 2 cycles (35 epochs): test accuracy 92.92%'
    """
    epochs = sum(training["epochs"] for _, training in chain)
    cycles = f", {len(chain)} cycles ({epochs} epochs)" if len(chain) > 1 else ""
    accuracy = record.get("test_accuracy")
    return (f"{record['name']}{cycles}: test accuracy "
            + ("n/a" if accuracy is None else f"{100 * accuracy:.2f}%"))


def _plot_cycle(ax_loss, ax_acc, cycle, start, first):
    history = cycle["history"]
    def values(key, error=False):
        data = np.array([np.nan if v is None else v for v in history[key]], float)
        return 100 * (1 - data) if error else data

    epochs = start + np.arange(1, len(history["loss"]) + 1)
    colors = {"train": "C0", "validation": "C1"}
    for label, loss, accuracy in (("train", "loss", "accuracy"),
                                  ("validation", "val_loss", "val_accuracy")):
        if loss in history:
            ax_loss.plot(epochs, values(loss), color=colors[label],
                         label=label if first else None)
        if accuracy in history:
            ax_acc.plot(epochs, values(accuracy, error=True), color=colors[label],
                        label=label if first else None)
    kept = cycle.get("best_epoch")
    if kept and "val_accuracy" in history and history["val_accuracy"][kept - 1] is not None:
        ax_acc.plot(start + kept, 100 * (1 - history["val_accuracy"][kept - 1]), "o",
                    color=colors["validation"], label="kept epoch" if first else None)


def replot(json_path, png_path=None, search=()):
    """Re-render the curves of a saved record: NAME.json -> NAME.png (or `png_path`).

    Earlier cycles' JSONs are looked for beside `json_path`, then in `search`.
    """
    json_path = pathlib.Path(json_path)
    record = json.loads(json_path.read_text())
    png_path = pathlib.Path(png_path) if png_path else json_path.with_suffix(".png")
    with staged_outputs(png_path.parent) as staging:
        plot_curves(record, staging / png_path.name, [json_path.parent, *search])
    return png_path
