"""`python -m kbnn.export --tflite MODEL.keras [-o OUT.tflite] [--weights MODE] [--batch N] [--verify-data DIR] [--verify-samples N] [--report]`

Converts a saved Keras model to a `.tflite` file whose binary kernels are
packed 1 bit per weight and which runs on the stock LiteRT runtime, then
checks it: N inputs (1,000 Fashion-MNIST test images when data is
available, else random inputs over [0, 1]) go through Keras and LiteRT;
the top-1 predictions must all agree and the logits match within the
tolerance of `kbnn.export.verify` (with `--weights int8`, whose activations
are quantized at run time, top-1 must agree where Keras' top logit leads
by more than `verify.INT8_MARGIN`). On any failure nothing is written and
the exit status is non-zero.
"""

import argparse
import os
import sys
import zipfile

import numpy as np

from kbnn.export.graph import WEIGHT_MODES, ExportError

EXIT_ERROR = 1


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
                        "float32, or int8 (bigger files, faster on the stock runtime; verified "
                        "with a looser tolerance, see kbnn.export.verify)")
    parser.add_argument("--verify-data", metavar="DIR",
                        help="Fashion-MNIST IDX directory for verification inputs "
                        "(default: $KBNN_DATA_DIR; without one, random inputs)")
    parser.add_argument("--verify-samples", type=_positive("inputs"), default=1000, metavar="N",
                        help="verify on N inputs")
    parser.add_argument("--batch", type=_positive("inputs per batch"), metavar="N",
                        help="fix the file's batch size to N (default: dynamic); e.g. "
                        "--batch 1 for runtimes that want static shapes, such as LiteRT.js")
    parser.add_argument("--report", action="store_true",
                        help="print per-layer storage, file size and the size floor")
    return parser


def _verification_inputs(model, data_dir, samples):
    """Test images when a data directory is known, else uniform random inputs."""
    shape = tuple(model.inputs[0].shape[1:])
    if None in shape:
        raise ExportError(f"model {model.name!r} takes inputs of shape {(None, *shape)}; "
                          f"export needs every dimension but the batch fixed. Rebuild it "
                          f"with a fixed keras.Input shape and save it again.")
    if data_dir and shape != (28, 28, 1):
        raise ValueError(f"--verify-data {data_dir}: Fashion-MNIST images are 28x28x1, the "
                         f"model takes {shape}; leave --verify-data out to verify on random "
                         f"inputs.")
    data_dir = data_dir or os.environ.get("KBNN_DATA_DIR")
    if data_dir and shape == (28, 28, 1):
        from kbnn.data import load_fashion_mnist

        images, _ = load_fashion_mnist("test", data_dir=data_dir, as_numpy=True)
        return images[:samples], "Fashion-MNIST test images"
    rng = np.random.default_rng(0)
    return rng.random((samples, *shape), np.float32), "random inputs in [0, 1)"


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


def _load(path):
    import keras

    import kbnn  # noqa: F401  (registers kbnn's layers and quantizers)

    if not path.endswith(".keras"):
        raise ValueError(f"{path}: expected a .keras file (saved with model.save("
                         f"'name.keras')); .h5 and SavedModel directories are not supported.")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file.")
    try:
        return keras.models.load_model(path)
    except (zipfile.BadZipFile, OSError, ValueError, TypeError, KeyError) as error:
        raise ValueError(f"{path}: not a readable Keras model file ({error}).") from error


def main(argv=None):
    args = _parser().parse_args(argv)
    output = args.output or os.path.splitext(args.model)[0] + ".tflite"
    from kbnn.export import ExportError, export_tflite, verify, write_atomically

    try:
        verify.require_litert()
        _check_output(output, args.model)
        print(f"loading {args.model}", flush=True)
        model = _load(args.model)
        print(f"converting {model.name} (binary weights: {args.weights})", flush=True)
        result = export_tflite(model, weights=args.weights, batch_size=args.batch)
        foreign = verify.custom_ops(result.tflite)
        if foreign:
            raise ExportError(f"the converted file needs non-builtin ops {foreign}.")
        inputs, source = _verification_inputs(model, args.verify_data, args.verify_samples)
        print(f"verifying on {len(inputs)} {source}", flush=True)
        print(verify.compare(model, result.tflite, inputs, weights=args.weights))
        if args.report:
            print(result.report())
        write_atomically(output, result.tflite)
    except (ExportError, verify.VerificationError, ValueError, OSError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        print("nothing written.", file=sys.stderr)
        return EXIT_ERROR
    except Exception as error:  # a bug or a case we did not foresee: still write nothing
        print(f"error: unexpected {type(error).__name__} while exporting {args.model}: "
              f"{error} (please report it).", file=sys.stderr)
        print("nothing written.", file=sys.stderr)
        return EXIT_ERROR
    print(f"wrote {output} ({len(result.tflite):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
