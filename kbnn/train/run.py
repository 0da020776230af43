"""One training run: check everything, read the data, fit, score the test split, save.

Example:

    from kbnn.train import train_and_save

    record = train_and_save("bnn_mlp", {"hidden_units": (128,)}, "runs/bnn_mlp_128",
                            epochs=2, data_dir="../shared/data/fashion_mnist")
    record["test_accuracy"]        # also in runs/bnn_mlp_128.json, beside .keras and .png
"""

import pathlib
import tempfile

import keras

from kbnn import zoo
from kbnn.data import load_fashion_mnist
from kbnn.distill import with_teacher_logits
from kbnn.files import check_replaceable, remove_stale_partials, staged_outputs
from kbnn.train import multi_worker
from kbnn.train.fit import TrainingError, as_model, augment, fit_model, inference_copy
from kbnn.train.record import dumps, plot_curves, run_record, training_record
from kbnn.train.settings import Settings
from kbnn.train.strategy import is_chief, is_multi_worker, make_strategy

__all__ = ["OUTPUT_SUFFIXES", "check_output", "default_out", "train_and_save"]

OUTPUT_SUFFIXES = (".keras", ".json", ".png")


def train_and_save(builder, model_args, out=None, *, verbose=1, **settings):
    """Train a zoo model and write OUT.keras, OUT.json and OUT.png; return the record.

    `settings` are the fields of `kbnn.train.settings.Settings` (epochs=30,
    batch_size=100, lr=3e-3, seed=0, validation_size=5000, distribute, flip,
    shift, jit_compile, steps_per_execution=50, precision="float32", teacher, alpha,
    temperature, init, ema, data_dir), all checked, with the output location and the
    data, before training. The last `validation_size` training images are held out
    and the best epoch on them is kept; with 0 it trains on all training images and
    keeps the last epoch (the second stage of a recipe whose settings were chosen
    on a validation run). The test split is scored once, at the end.

    `out` defaults to saved_models/<model name> (`kbnn.zoo.models_dir()`), where
    `weights="fashion_mnist"` finds it, and refuses to replace a model already there
    (pass `out` for that). `distribute` is None, "mirrored", "multi_worker" or a
    `tf.distribute.Strategy`; with several workers only the chief writes.
    `teacher` (a .keras path or a model) is distilled into the model (`fit_model`);
    without augmentation its logits are computed once. `init` (a .keras path or a
    model) gives the starting weights; `ema` a weight-averaging momentum.
    """
    settings = Settings(**settings)
    if builder not in zoo.BUILDERS:
        raise ValueError(f"Unknown zoo builder {builder!r}; known: {', '.join(zoo.BUILDERS)}.")
    zoo.BUILDERS[builder].spec.check(model_args)
    strategy = make_strategy(settings.distribute)  # first: multi-worker needs it at startup
    out = check_output(out if out is not None else default_out(builder, model_args))
    keras.utils.set_random_seed(settings.seed)  # after default_out's model: same weights
    if "binarization" in model_args and model_args.get("seed") is None:
        model_args = {**model_args, "seed": settings.seed}
    train, val, test, teacher, cache_teacher = _datasets(
        settings, strategy, settings.teacher, verbose)
    fitted = fit_model(
        builder, model_args, train, val, epochs=settings.epochs, lr=settings.lr,
        distribute=strategy, jit_compile=settings.jit_compile, teacher=teacher,
        alpha=settings.alpha, temperature=settings.temperature, init=settings.init,
        ema=settings.ema, steps_per_execution=settings.steps_per_execution,
        precision=settings.precision, verbose=verbose)
    evaluation = multi_worker.evaluate(fitted.model, strategy, test) \
        if is_multi_worker(strategy) else fitted.model.evaluate(test, verbose=0)
    teacher_name = None if settings.teacher is None else (
        settings.teacher.name if isinstance(settings.teacher, keras.Model)
        else pathlib.Path(settings.teacher).name)
    record = run_record(
        out.name, {"builder": builder, **zoo.BUILDERS[builder].spec.record(model_args)},
        training_record(settings, teacher_name=teacher_name, cache_teacher=cache_teacher),
        fitted, evaluation, out)
    if is_chief(strategy):
        search = [] if settings.init is None or isinstance(settings.init, keras.Model) \
            else [pathlib.Path(settings.init).parent]
        with staged_outputs(out.parent) as staging:
            inference_copy(fitted.model).save(staging / f"{out.name}.keras")
            plot_curves(record, staging / f"{out.name}.png", search)
            (staging / f"{out.name}.json").write_text(dumps(record))
    return record


def _datasets(settings, strategy, teacher, verbose):
    """(train, val or None, test, teacher model or None, whether its logits are cached)."""
    data_dir, batch_size, seed = settings.data_dir, settings.batch_size, settings.seed
    test = load_fashion_mnist("test", data_dir=data_dir, batch_size=1000)
    if int(test.cardinality()) == 0:
        raise TrainingError(f"the test split of {data_dir} holds no images; point data_dir "
                            f"at a complete Fashion-MNIST copy.")
    size = settings.validation_size
    split = dict(validation_size=size, subset="training") if size else {}
    if teacher is not None:  # loaded once, in the strategy that trains with it
        with strategy.scope():
            teacher = as_model(teacher)
    cache_teacher = teacher is not None and not (settings.flip or settings.shift)
    if cache_teacher:  # the inputs are the same every epoch: run the teacher once
        images, labels = load_fashion_mnist("train", data_dir=data_dir, as_numpy=True, **split)
        train = with_teacher_logits(teacher, images, labels, batch_size=batch_size, seed=seed)
    else:
        train = load_fashion_mnist("train", data_dir=data_dir, batch_size=batch_size,
                                   shuffle=True, seed=seed, **split)
    if settings.flip or settings.shift:
        train = augment(train, flip=settings.flip, shift=settings.shift, seed=seed)
    val = load_fashion_mnist("train", data_dir=data_dir, validation_size=size,
                             subset="validation", batch_size=1000) if size else None
    return train, val, test, teacher, cache_teacher


def default_out(builder, model_args):
    """saved_models/<model name>, before training: an error if a model is already there."""
    out = zoo.models_dir() / zoo.BUILDERS[builder](**model_args).name
    if out.with_suffix(".keras").exists():
        raise FileExistsError(
            f"{out}.keras exists already; training without an output path would replace "
            f"it. Pass --out (out=) to write elsewhere, e.g. --out runs/{out.name}, or "
            f"--out {out} to replace it on purpose.")
    return out


def check_output(out):
    """`out` without a .keras suffix, once OUT.keras/.json/.png are known writable.

    The nearest existing parent directory must be a directory one can create files
    in (tried, not guessed from permission bits), and no output may be a directory
    or a read-only file. Leftovers of an earlier killed run there are removed.
    """
    out = pathlib.Path(out)
    if out.suffix == ".keras":  # `--out x.keras` names the set x.keras / x.json / x.png
        out = out.with_suffix("")
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise NotADirectoryError(f"cannot write {out}.*: {parent} is a file, not a "
                                 f"directory; choose another output path.")
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as error:
        raise PermissionError(f"cannot write {out}.*: cannot create files in {parent} "
                              f"({error.strerror}); choose another output path.") from None
    if out.parent.is_dir():
        remove_stale_partials(out.parent)
    for suffix in OUTPUT_SUFFIXES:
        check_replaceable(out.parent / (out.name + suffix))
    return out
