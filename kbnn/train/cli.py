"""The command line `python -m kbnn.train MODEL [options]` (see `kbnn.train`).

Example:

    python -m kbnn.train bnn_mlp --hidden 128 --epochs 2 --out runs/bnn_mlp_128

Every option is checked before any work; a bad one exits 2 with one line that
names it. kbnn's own errors (data, training) print one line that says what to do
and exit 1; `--verbose` adds the traceback and TensorFlow's start-up lines.
"""

import argparse
import dataclasses
import os
import sys
import traceback

from kbnn import zoo
from kbnn.data import load_fashion_mnist
from kbnn.layers import PRECISIONS
from kbnn.files import exit_on_sigterm
from kbnn.train.fit import TrainingError
from kbnn.train.run import check_output, default_out, train_and_save
from kbnn.train.settings import SettingError, Settings
from kbnn.train.strategy import DISTRIBUTE_CHOICES, is_chief, make_strategy
from kbnn.zoo.spec import add_cli_options, cli_model_args

__all__ = ["main"]

EXIT_ERROR, EXIT_USAGE = 1, 2

# Errors whose message is written for the user; anything else is a bug to report.
_KBNN_ERRORS = (ValueError, OSError, ImportError, TrainingError)

_FLAGS = {"jit_compile": "--jit"}  # other settings: --name-with-dashes


def _flag(setting):
    return _FLAGS.get(setting, "--" + setting.replace("_", "-"))


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        """One line, not argparse's usage block: the option and what to give instead."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except for options whose default is the builder's own."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def _parser():
    defaults = Settings()
    parser = _Parser(prog="python -m kbnn.train", formatter_class=_HelpFormatter,
                     description="Train a zoo model on Fashion-MNIST and save it with its "
                     "metrics.")
    parser.add_argument("model", choices=sorted(zoo.BUILDERS))
    add_cli_options(parser.add_argument_group("model options (kbnn.zoo)"), zoo.BUILDERS)
    add = parser.add_argument_group("training").add_argument
    add("--epochs", type=int, default=defaults.epochs, help="training epochs")
    add("--batch-size", type=int, default=defaults.batch_size, help="batch size")
    add("--lr", type=float, default=defaults.lr, help="peak Adam learning rate")
    add("--seed", type=int, default=defaults.seed,
        help="seed of initialization, shuffling, dropout and augmentation")
    add("--data-dir", help="IDX directory (else $KBNN_DATA_DIR, else tfds)")
    add("--validation-size", type=int, default=defaults.validation_size,
        help="hold out the last N training images to pick the best epoch; "
        "0 trains on all 60k and keeps the last epoch")
    add("--distribute", choices=DISTRIBUTE_CHOICES,
        help="train under MirroredStrategy (all local devices) or "
        "MultiWorkerMirroredStrategy (machines from TF_CONFIG)")
    add("--flip", action="store_true", help="augment: random h-flips")
    add("--shift", type=int, default=defaults.shift, help="augment: random shifts (px)")
    add("--teacher", help="distill from this .keras model (e.g. the float twin)")
    add("--alpha", type=float, default=defaults.alpha,
        help="weight of the distillation term (with --teacher)")
    add("--temperature", type=float, default=defaults.temperature,
        help="softmax temperature of the distillation term (with --teacher)")
    add("--init", help="start from this .keras model's weights (same "
        "architecture): a second cycle of the learning-rate schedule")
    add("--ema", type=float, metavar="MOMENTUM",
        help="validate and keep the moving average of the weights (e.g. 0.999)")
    add("--jit", dest="jit_compile", action="store_true",
        help="XLA-compile the training step (slower on CPU here)")
    add("--steps-per-execution", type=int, default=defaults.steps_per_execution,
        help="training steps per call of the compiled step (callbacks and the progress "
        "bar see every Nth batch); 1 for Keras' default")
    add("--precision", choices=PRECISIONS, default=defaults.precision,
        help="forward product of the binary x binary layers (bit-identical results); "
        "auto: bfloat16 for binary convolutions where the CPU has bfloat16 instructions")
    output = parser.add_argument_group("output").add_argument
    output("--out", help="output path without suffix "
           "(default: saved_models/<model name>, if no model is there yet)")
    output("--quiet", action="store_true",
           help="one line per epoch instead of the progress bar (for logs)")
    output("--verbose", action="store_true",
           help="show TensorFlow's start-up lines and the traceback of an error")
    return parser


def _checked(parser, args):
    """(model_args, settings, out) from the options, or exit 2 naming the bad one."""
    try:
        model_args = cli_model_args(args, args.model, zoo.BUILDERS)
    except (TypeError, ValueError) as error:  # "name=value: ..." -> "--flag: name=value: ..."
        flags = [a.flag for a in zoo.BUILDERS[args.model].spec.arguments.values()
                 if str(error).startswith(f"{a.name}=")]
        parser.error(": ".join([*flags, str(error)]))
    settings = {field.name: getattr(args, field.name)
                for field in dataclasses.fields(Settings)}
    try:
        Settings(**settings)
    except SettingError as error:
        parser.error(f"{_flag(error.setting)} {error.value}: {error.reason}")
    if args.distribute == "multi_worker":  # before default_out builds a model: collectives
        make_strategy("multi_worker")      # are set up as TensorFlow starts (made once)
    try:
        out = check_output(args.out if args.out else default_out(args.model, model_args))
    except OSError as error:
        parser.error(f"--out {args.out or '(default)'}: {error}")
    data_dir = args.data_dir or os.environ.get("KBNN_DATA_DIR")
    if data_dir:  # without one the data comes from tfds, read when training starts
        try:
            images, _ = load_fashion_mnist("test", data_dir=data_dir, as_numpy=True)
        except (ValueError, OSError) as error:
            parser.error(f"--data-dir {data_dir}: {error}")
        if not len(images):
            parser.error(f"--data-dir {data_dir}: the test split holds no images; "
                         f"point it at a complete Fashion-MNIST copy.")
    return model_args, settings, out


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    with exit_on_sigterm():  # a kill runs the clean-up of partial outputs
        model_args, settings, out = _checked(parser, args)
        print(f"training {args.model} for {args.epochs} epochs; then writing "
              f"{out}.keras/.json/.png", flush=True)
        try:
            record = train_and_save(args.model, model_args, out,
                                    verbose=2 if args.quiet else 1, **settings)
        except Exception as error:  # noqa: BLE001  (one line, or the traceback on request)
            if args.verbose:
                traceback.print_exc()
            if isinstance(error, _KBNN_ERRORS):
                print(f"error: {error}", file=sys.stderr)
            else:
                print(f"error: unexpected {type(error).__name__}: {error} (rerun with "
                      f"--verbose for the traceback, and please report it).", file=sys.stderr)
            print("nothing written.", file=sys.stderr)
            return EXIT_ERROR
    accuracy = record["test_accuracy"]  # None if it was not a number
    chief = args.distribute != "multi_worker" or is_chief(make_strategy("multi_worker"))
    print(f"{record['name']}: test accuracy "
          f"{'n/a' if accuracy is None else f'{100 * accuracy:.2f}%'} "
          f"(best epoch {record['best_epoch']}/{args.epochs}); "
          f"{'wrote' if chief else 'the chief writes'} {record['out']}.keras/.json/.png")
    return 0
