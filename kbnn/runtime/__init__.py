"""kbnn's LiteRT delegate: runs the packed binary layers of an exported file with bit kernels.

>>> import keras, numpy as np, kbnn, kbnn.runtime
>>> model = keras.Sequential([keras.Input((64,)), kbnn.layers.QuantDense(
...     8, input_quantizer="ste_sign", kernel_quantizer="ste_sign", use_bias=False)])
>>> delegate = kbnn.runtime.load_delegate()
>>> from ai_edge_litert.interpreter import Interpreter
>>> interpreter = Interpreter(model_content=kbnn.export.to_tflite(model),
...                           experimental_delegates=[delegate])
>>> kbnn.runtime.claimed_layers(delegate)               # XNOR + popcount from now on
1
>>> interpreter.allocate_tensors()
>>> interpreter.set_tensor(interpreter.get_input_details()[0]["index"],
...                        np.ones((1, 64), np.float32))
>>> interpreter.invoke()

`kbnn.runtime.Interpreter(model_path=..., num_threads=...)` does the same in one call.
The file is the one `python -m kbnn.export --tflite` writes, unchanged: builtin
ops only, so the stock runtime runs it without the delegate, and with it the
delegate claims each packed layer it recognises (dense, conv and depthwise
layers; see `csrc/delegate.c` for the patterns) and leaves everything else to LiteRT.
Outputs agree with the stock runtime to float32 rounding (bit for bit on the released
models), and `python -m kbnn.export --tflite` also verifies a file with the delegate
when this library is built.

The delegate is a C shared library built when kbnn is installed (`pip install -e .`,
a C compiler is all it needs). Apps that bundle LiteRT load the same library
(`tflite_plugin_create_delegate`, or `kbnn_delegate_create` from
`csrc/delegate.h`); `python -m kbnn.runtime --info` says where it is and which
kernels this CPU runs.
"""

import ctypes
import glob
import os

__all__ = ["LAYOUT_VERSION", "DelegateNotBuiltError", "library_path", "load_delegate",
           "Interpreter", "claimed_layers", "delegate_threads", "kernels_name",
           "KERNEL_LEVELS"]

# The packed-layer layout this Python side expects the library to read (csrc/delegate.c).
LAYOUT_VERSION = 1
# Kernel levels of csrc/bitkernels.h, lowest first.
KERNEL_LEVELS = {"reference": 0, "popcnt": 1, "avx2": 2, "avx512-vpopcntdq": 3, "neon": 4}

_HERE = os.path.dirname(os.path.abspath(__file__))
_ENV = "KBNN_DELEGATE_LIBRARY"


class DelegateNotBuiltError(ImportError):
    """The delegate's shared library is missing; the message says how to build it."""


def library_path():
    """Path of the delegate's shared library: $KBNN_DELEGATE_LIBRARY, else the one built
    into this package. Raises DelegateNotBuiltError if there is none."""
    path = os.environ.get(_ENV)
    if path:
        if not os.path.isfile(path):
            raise DelegateNotBuiltError(f"${_ENV} is {path!r}, which is not a file.")
        return path
    found = sorted(glob.glob(os.path.join(_HERE, "_kbnn_delegate*.so"))
                   + glob.glob(os.path.join(_HERE, "_kbnn_delegate*.dylib"))
                   + glob.glob(os.path.join(_HERE, "_kbnn_delegate*.pyd")))
    if not found:
        raise DelegateNotBuiltError(
            f"kbnn's LiteRT delegate is not built (no _kbnn_delegate*.so in {_HERE}). Build it "
            f"with a C compiler: `pip install -e .` from the kbnn checkout (or `python setup.py "
            f"build_ext --inplace`). Exported files still run on the stock runtime without it."
        )
    return found[-1]


def _library():
    lib = ctypes.CDLL(library_path())
    lib.kbnn_layout_version.restype = ctypes.c_int
    lib.kbnn_kernels_name.restype = ctypes.c_char_p
    lib.kbnn_kernels_name.argtypes = [ctypes.c_int]
    lib.kbnn_cpu_supports.argtypes = [ctypes.c_int]
    for name in ("kbnn_delegate_claimed_layers", "kbnn_delegate_threads"):
        getattr(lib, name).argtypes = [ctypes.c_void_p]
        getattr(lib, name).restype = ctypes.c_int
    lib.kbnn_run_kernel.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                    ctypes.c_size_t, ctypes.c_size_t, ctypes.c_void_p]
    version = lib.kbnn_layout_version()
    if version != LAYOUT_VERSION:
        raise DelegateNotBuiltError(
            f"The delegate library {library_path()} reads layout version {version}, this kbnn "
            f"writes {LAYOUT_VERSION}: rebuild it (`pip install -e .`).")
    return lib


def load_delegate(num_threads=None, max_kernel_level=None, verbose=False):
    """The kbnn delegate loaded into LiteRT, for `experimental_delegates=[...]`.

    `num_threads=None` follows the interpreter's thread count; `max_kernel_level`
    (a name of KERNEL_LEVELS) caps the kernels run-time dispatch may choose.
    `verbose` prints to stderr what is claimed (True or 1), and with 2 also each partition.
    """
    from kbnn.export.verify import require_litert

    require_litert()
    from ai_edge_litert.interpreter import load_delegate as litert_load_delegate

    _library()  # checks the build and its layout version, with a clear error
    options = {}
    if num_threads is not None:
        if int(num_threads) < 1:
            raise ValueError(f"num_threads={num_threads}: use a positive count or None.")
        options["num_threads"] = str(int(num_threads))
    if max_kernel_level is not None:
        if max_kernel_level not in KERNEL_LEVELS:
            raise ValueError(f"Unknown kernel level {max_kernel_level!r}; known: "
                             f"{', '.join(KERNEL_LEVELS)}.")
        options["max_kernel_level"] = str(KERNEL_LEVELS[max_kernel_level])
    if verbose:
        options["verbose"] = str(int(verbose))
    return litert_load_delegate(library_path(), options)


def Interpreter(model_path=None, model_content=None, num_threads=None, **kwargs):
    """An `ai_edge_litert` Interpreter that runs the file with the kbnn delegate.

    Keyword arguments other than these go to the LiteRT Interpreter; the
    delegate uses the interpreter's `num_threads`.
    """
    from ai_edge_litert.interpreter import Interpreter as LiteRTInterpreter

    delegates = list(kwargs.pop("experimental_delegates", None) or [])
    delegate = load_delegate()
    return LiteRTInterpreter(model_path=model_path, model_content=model_content,
                             num_threads=num_threads,
                             experimental_delegates=[delegate] + delegates, **kwargs)


def claimed_layers(delegate):
    """How many packed layers `delegate` has taken over, in all interpreters it prepared."""
    return _library().kbnn_delegate_claimed_layers(delegate._delegate_ptr)


def delegate_threads(delegate):
    """Threads `delegate` runs its kernels on (known once an interpreter prepared it)."""
    return _library().kbnn_delegate_threads(delegate._delegate_ptr)


def kernels_name(max_kernel_level=None):
    """The kernels run-time dispatch picks on this CPU, e.g. 'avx512-vpopcntdq'."""
    level = 100 if max_kernel_level is None else KERNEL_LEVELS[max_kernel_level]
    return _library().kbnn_kernels_name(level).decode()


def cpu_kernel_levels():
    """The KERNEL_LEVELS names this CPU can run."""
    lib = _library()
    return [name for name, level in KERNEL_LEVELS.items() if lib.kbnn_cpu_supports(level)]
