"""`python -m kbnn.export --tflite MODEL.keras [-o OUT.tflite] [--weights MODE] [--batch N] [--verify-data DIR|NPY] [--verify-samples N] [--report]`

Converts a saved Keras model to a `.tflite` file whose binary kernels are
packed 1 bit per weight and which runs on the stock LiteRT runtime, then
checks it: N inputs (1,000 by default; from `--verify-data`, a directory of
IDX files or a .npy array, else random pixels k/255) go through Keras
and LiteRT; the top-1 predictions must all agree and the logits match within the
tolerance of `kbnn.export.verify`, in every `--weights` mode. Where kbnn's LiteRT
delegate (`kbnn.runtime`) is built, the file is also run with it and held to the
same rules; the output says whether that check ran or was skipped. On any failure
nothing is written and the exit status is non-zero.
"""

import argparse
import os
import pathlib
import sys
import zipfile

import numpy as np

from kbnn.export.plan import WEIGHT_MODES, ExportError
from kbnn.export.verify import VerificationError

EXIT_ERROR = 1
# Random verification inputs are made in memory: at most this many bytes of them.
MAX_RANDOM_BYTES = 1 << 30


def _positive(what):
    """An argparse type: a whole number >= 1, the error naming `what` it counts."""
    def parse(text):
        value = int(text)
        if value < 1:
            raise argparse.ArgumentTypeError(f"{text}: give a number of {what} >= 1")
        return value

    return parse


def _parser():
    parser = argparse.ArgumentParser(prog="python -m kbnn.export",
                                     description=__doc__.splitlines()[0].strip("`"))
    parser.add_argument("model", help="a .keras file saved by Keras / kbnn")
    parser.add_argument("--tflite", action="store_true", required=True,
                        help="export to TFLite (the only format so far)")
    parser.add_argument("-o", "--output", help="output path (default: MODEL.tflite)")
    parser.add_argument("--weights", choices=WEIGHT_MODES, default="packed",
                        help="how binary kernels are stored: packed 1 bit each (default), "
                        "float32, or int8 / int4 / int2 (bigger files, much faster on the "
                        "stock runtime, exact for inputs on the 1/255 grid; int4 / int2 store "
                        "dense kernels only, convolutions int8; see kbnn.export.lowbit)")
    parser.add_argument("--verify-data", metavar="DIR_OR_NPY",
                        help="verification inputs: a directory of IDX files (the images "
                        "file whose items fit the model's input, a test split first; uint8 "
                        "scaled to [0, 1]) or a .npy array of inputs (default: random inputs "
                        "in [0, 1))")
    parser.add_argument("--verify-samples", type=_positive("inputs"), default=1000, metavar="N",
                        help="verify on N inputs")
    parser.add_argument("--batch", type=_positive("inputs per batch"), metavar="N",
                        help="fix the file's batch size to N (default: dynamic); e.g. "
                        "--batch 1 for runtimes that want static shapes, such as LiteRT.js")
    parser.add_argument("--report", action="store_true",
                        help="print per-layer storage, file size and the size floor")
    parser.add_argument("--verbose", action="store_true",  # read by kbnn.startup
                        help="show TensorFlow's start-up lines (hidden by default)")
    return parser


def _fits(item_shape, shape):
    """Whether items of `item_shape` are model inputs of `shape` (a missing trailing
    channel axis of 1 is added, as for grayscale images stored H x W)."""
    return tuple(item_shape) in (shape, shape[:-1] if shape[-1:] == (1,) else None)


def _idx_inputs(directory, shape):
    """(inputs, file name) from the first IDX file in `directory` whose items fit `shape`;
    files named like a test split (test, t10k) are tried first, uint8 scaled to [0, 1]."""
    from kbnn.data import IDXFormatError, read_idx

    names = sorted(os.listdir(directory),
                   key=lambda n: (not any(t in n.lower() for t in ("test", "t10k")), n))
    found = []
    for name in names:
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            continue
        try:
            array = read_idx(path)
        except IDXFormatError:
            continue
        if _fits(array.shape[1:], shape):
            scale = np.float32(255 if array.dtype == np.uint8 else 1)  # as kbnn.data does
            return (array.astype(np.float32) / scale).reshape((-1, *shape)), name
        found.append(f"{name} {array.shape[1:]}")
    raise ValueError(f"--verify-data {directory}: no IDX file there holds inputs of the shape "
                     f"the model takes {shape} (found: {', '.join(found) or 'no IDX files'}); "
                     f"give a directory or a .npy file of such inputs, or leave --verify-data "
                     f"out to verify on random inputs.")


def _npy_inputs(path, shape):
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    if not _fits(array.shape[1:], shape):
        raise ValueError(f"--verify-data {path}: holds an array of shape {array.shape}; the "
                         f"model takes {shape}, so give an array of shape (N, "
                         f"{', '.join(map(str, shape))}).")
    return np.asarray(array, np.float32).reshape((-1, *shape)), os.path.basename(path)


def _verification_inputs(model, source, samples):
    """`samples` inputs from `source` (a directory of IDX files or a .npy file of
    inputs), else random pixels k/255, and a description of them."""
    shape = tuple(model.inputs[0].shape[1:])
    if None in shape:
        raise ExportError(f"model {model.name!r} takes inputs of shape {(None, *shape)}; "
                          f"export needs every dimension but the batch fixed. Rebuild it "
                          f"with a fixed keras.Input shape and save it again.")
    if source is None:
        size = samples * int(np.prod(shape)) * 4
        if size > MAX_RANDOM_BYTES:
            raise ValueError(f"--verify-samples {samples}: that many random inputs of shape "
                             f"{shape} take {size / 2**30:,.1f} GiB; give at most "
                             f"{MAX_RANDOM_BYTES // (4 * int(np.prod(shape))):,}.")
        rng = np.random.default_rng(0)
        # On the 1/255 grid of pixels, where the integer weights modes are exact.
        pixels = rng.integers(0, 256, (samples, *shape)).astype(np.float32) / np.float32(255)
        return pixels, "random inputs (pixels k/255)"
    if os.path.isdir(source):
        inputs, name = _idx_inputs(source, shape)
    elif source.endswith(".npy") and os.path.isfile(source):
        inputs, name = _npy_inputs(source, shape)
    else:
        raise FileNotFoundError(f"--verify-data {source}: not a directory of IDX files nor "
                                f"a .npy file of inputs.")
    return inputs[:samples], f"inputs from {name}"


def _check_output(output, model_path):
    """Fail before converting when `output` cannot be written or would clobber the model."""
    out_dir = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(out_dir) or not os.access(out_dir, os.W_OK):
        raise PermissionError(f"cannot write {output}: directory {out_dir} does not "
                              f"exist or is not writable; choose another path with -o.")
    if os.path.isdir(output):
        raise IsADirectoryError(f"cannot write {output}: it is a directory; give a file "
                                f"path with -o, e.g. -o {os.path.join(output, 'model.tflite')}.")
    if os.path.exists(model_path) and os.path.exists(output) and os.path.samefile(
            output, model_path):
        raise ValueError(f"-o {output} is the model being exported; choose another path.")


def _check_archive(path):
    """Raise ValueError unless `path` is a whole zip archive (what a .keras file is)."""
    with open(path, "rb") as f:
        starts_as_zip = f.read(4) == b"PK\x03\x04"
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except zipfile.BadZipFile:
        damaged = True
    if damaged and starts_as_zip:
        raise ValueError(f"{path}: the file is truncated or damaged (it begins as a .keras "
                         f"zip archive but does not read to its end); copy or save it again.")
    if damaged:
        raise ValueError(f"{path}: not a readable Keras model file (a .keras file is a zip "
                         f"archive; this one is not).")


def _load(path):
    import keras

    import kbnn  # noqa: F401  (registers kbnn's layers and quantizers)

    if not path.endswith(".keras"):
        raise ValueError(f"{path}: expected a .keras file (saved with model.save("
                         f"'name.keras')); .h5 and SavedModel directories are not supported.")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file.")
    _check_archive(path)
    try:
        return keras.models.load_model(path)
    except (zipfile.BadZipFile, OSError, ValueError, TypeError, KeyError) as error:
        raise ValueError(f"{path}: not a readable Keras model file ({error}).") from error


def main(argv=None):
    args = _parser().parse_args(argv)
    output = args.output or os.path.splitext(args.model)[0] + ".tflite"
    from kbnn.files import exit_on_sigterm

    try:
        with exit_on_sigterm():  # SIGTERM unwinds: no temporary file outlives it
            result = _export(args, output)
    except (ExportError, VerificationError, ValueError, OSError, ImportError) as error:
        return _fail(f"error: {error}")
    except SystemExit as stop:
        _fail(f"terminated (exit status {stop.code}).")
        raise
    except Exception as error:  # a bug or a case we did not foresee: still write nothing
        return _fail(f"error: unexpected {type(error).__name__} while exporting {args.model}: "
                     f"{error} (please report it).")
    print(f"wrote {output} ({len(result.tflite):,} bytes)")
    return 0


def _fail(message):
    print(message, file=sys.stderr)
    print("nothing written.", file=sys.stderr)
    return EXIT_ERROR


def _export(args, output):
    """Check, load, convert, verify, write; raise on any failure (nothing written)."""
    from kbnn.export import export_tflite, verify
    from kbnn.files import check_replaceable, remove_stale_partials, write_atomically
    from kbnn.startup import quiet_native_logs

    verify.require_litert()
    _check_output(output, args.model)
    check_replaceable(pathlib.Path(output))
    remove_stale_partials(os.path.dirname(os.path.abspath(output)))
    print(f"loading {args.model}", flush=True)
    model = _load(args.model)
    inputs, source = _verification_inputs(model, args.verify_data, args.verify_samples)
    print(f"converting {model.name} (binary weights: {args.weights})", flush=True)
    result = export_tflite(model, weights=args.weights, batch_size=args.batch)
    foreign = verify.custom_ops(result.tflite)
    if foreign:
        raise ExportError(f"the converted file needs non-builtin ops {foreign}.")
    print(f"verifying on {len(inputs)} {source}", flush=True)
    with quiet_native_logs():  # LiteRT's first interpreter announces XNNPACK
        verification = verify.compare(model, result.tflite, inputs, weights=args.weights,
                                      plans=result.plans)
    print(verification)
    with quiet_native_logs():
        print(verify.compare_with_delegate(model, result.tflite, inputs, weights=args.weights,
                                           plans=result.plans))
    if args.report:
        print(result.report())
    write_atomically(output, result.tflite)
    return result


if __name__ == "__main__":
    sys.exit(main())
