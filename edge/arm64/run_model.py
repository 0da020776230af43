"""Run a .tflite file on a batch of inputs with LiteRT and save its outputs (any CPU).

    python edge/arm64/run_model.py MODEL.tflite INPUTS.npy OUTPUTS.npy [--delegate LIB.so]

`edge/arm64/run.sh` runs this file under the emulated aarch64 Python; it needs only
numpy and ai-edge-litert, so it runs the same on the host. Inputs are float32 and
batched on axis 0. A model with a dynamic batch dimension runs the whole batch in one
invoke; a model with a static batch B runs it B rows at a time (the last chunk is padded
with zeros, and the padding's outputs are dropped). The outputs (the model's first
output, float32) are written to a temporary file and renamed, so a failed run leaves no
OUTPUTS.npy behind. `--check` only imports the runtime and prints its version.
"""

import argparse
import os
import platform
import sys

import numpy as np


def build_interpreter(model_path, delegate_path=None):
    """A LiteRT interpreter for `model_path`, with the delegate at `delegate_path` if given."""
    from ai_edge_litert.interpreter import Interpreter, load_delegate

    delegates = []
    if delegate_path:
        if not os.path.isfile(delegate_path):
            raise SystemExit(f"run_model: delegate {delegate_path!r} does not exist")
        delegates.append(load_delegate(delegate_path))
    interpreter = Interpreter(model_path=model_path, num_threads=1,
                              experimental_delegates=delegates)
    for delegate in delegates:
        report = describe_kbnn_delegate(delegate)
        if report:
            print(f"run_model: {report}", file=sys.stderr)
    return interpreter


def describe_kbnn_delegate(delegate):
    """'kbnn delegate: N layers claimed, KERNELS kernels' for kbnn's delegate, else None.

    Reads the counters that kbnn's delegate exports (kbnn/runtime/csrc/delegate.h), so a
    run can show that the delegate took the binary layers rather than leaving them all to
    the stock kernels. Another delegate library has no such symbols and gets None."""
    import ctypes

    library = getattr(delegate, "_library", None)
    pointer = getattr(delegate, "_delegate_ptr", None)
    if library is None or pointer is None or not hasattr(library, "kbnn_delegate_claimed_layers"):
        return None
    library.kbnn_delegate_claimed_layers.argtypes = [ctypes.c_void_p]
    library.kbnn_delegate_claimed_layers.restype = ctypes.c_int
    library.kbnn_delegate_kernels_name.argtypes = [ctypes.c_void_p]
    library.kbnn_delegate_kernels_name.restype = ctypes.c_char_p
    claimed = library.kbnn_delegate_claimed_layers(pointer)
    kernels = library.kbnn_delegate_kernels_name(pointer).decode()
    return f"kbnn delegate: {claimed} layers claimed, {kernels} kernels"


def run(interpreter, inputs):
    """The first output of `interpreter` for every row of `inputs`, stacked on axis 0."""
    [detail] = interpreter.get_input_details()
    shape = [int(n) for n in detail["shape"]]
    signature = [int(n) for n in detail["shape_signature"]]
    if list(inputs.shape[1:]) != shape[1:]:
        raise SystemExit(f"run_model: inputs have rows of shape {tuple(inputs.shape[1:])}, "
                         f"the model takes {tuple(shape[1:])}; reshape INPUTS.npy to "
                         f"(N, {', '.join(map(str, shape[1:]))})")
    if signature[0] == -1:
        interpreter.resize_tensor_input(detail["index"], [len(inputs), *shape[1:]])
        chunk = len(inputs)
    else:
        chunk = shape[0]
    interpreter.allocate_tensors()
    output_index = interpreter.get_output_details()[0]["index"]
    outputs = []
    for start in range(0, len(inputs), chunk):
        rows = inputs[start:start + chunk]
        padded = np.zeros((chunk, *inputs.shape[1:]), np.float32)
        padded[:len(rows)] = rows
        interpreter.set_tensor(detail["index"], padded)
        interpreter.invoke()
        outputs.append(np.array(interpreter.get_tensor(output_index))[:len(rows)])
    return np.concatenate(outputs).astype(np.float32, copy=False)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", help="the .tflite file")
    parser.add_argument("inputs", nargs="?", help="float32 .npy, batched on axis 0")
    parser.add_argument("outputs", nargs="?", help=".npy file to write")
    parser.add_argument("--delegate", help="path of a LiteRT delegate shared library")
    parser.add_argument("--check", action="store_true",
                        help="import the runtime, print its version and the CPU, and exit")
    args = parser.parse_args(argv)
    if args.check:
        import ai_edge_litert  # noqa: F401  (the import is the check)
        from importlib.metadata import version
        print(f"ai-edge-litert {version('ai-edge-litert')}, numpy {np.__version__}, "
              f"python {platform.python_version()} on {platform.machine()}")
        return 0
    if not (args.model and args.inputs and args.outputs):
        parser.error("MODEL, INPUTS and OUTPUTS are required (or --check)")
    inputs = np.load(args.inputs)
    if inputs.dtype != np.float32:
        raise SystemExit(f"run_model: {args.inputs} holds {inputs.dtype}; save it as float32")
    outputs = run(build_interpreter(args.model, args.delegate), inputs)
    tmp = f"{args.outputs}.tmp-{os.getpid()}.npy"
    try:
        np.save(tmp, outputs)
        os.replace(tmp, args.outputs)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
