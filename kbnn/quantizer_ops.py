"""TensorFlow ops, in C, for the training step of the sign quantizers: one pass each.

>>> import kbnn
>>> kbnn.quantizer_ops.available()
True
>>> y, keep = kbnn.quantizer_ops.sign_and_mask([-2.0, -0.0, 0.5], clip_value=1.0)
>>> y.numpy(), keep.numpy()
(array([-1.,  1.,  1.], dtype=float32), array([False,  True,  True]))

While a model trains, `kbnn.quantizers.SteSign` and `StochasticSign` (the two
binarizers of the zoo models) compute their output and its straight-through mask
with these ops instead of TensorFlow's: six passes over an activation (compare,
select, abs, compare; cast and multiply backward) become two (ten become two for
the stochastic sign, beside its random draw), and a latent kernel's sign one pass
instead of two. Outputs are bit-identical to TensorFlow's ops, NaN and
signed zeros included, so training gives the same weights with or without them.

They are TensorFlow's C kernel API (`kbnn/csrc/quantizer_ops.c`), built with
kbnn when a C compiler is present (`pip install -e .`) and loaded with
`tf.load_op_library`. They are used only where they can run: float32 inputs, a
training call, no GPU, and not inside an XLA-compiled function (they have no
XLA kernel). Inference (`predict`, export) always runs TensorFlow's ops, so saved
and exported graphs hold no kbnn op. Set `KBNN_QUANTIZER_OPS=0` to train with
TensorFlow's ops, or use `disabled()` around the first call of a model.
"""

import contextlib
import functools
import glob
import os
import threading
import warnings

import tensorflow as tf

__all__ = ["available", "library_path", "enabled", "disabled", "usable", "sign",
           "sign_and_mask", "stochastic_sign_and_mask", "masked_gradient"]

_HERE = os.path.dirname(os.path.abspath(__file__))
_ENV = "KBNN_QUANTIZER_OPS"
_state = threading.local()


def library_path():
    """Path of the built ops library, or None when kbnn was installed without a C compiler."""
    found = sorted(glob.glob(os.path.join(_HERE, "_quantizer_ops*.so")))
    return found[-1] if found else None


@functools.cache
def _library():
    path = library_path()
    if path is None:
        return None
    try:
        return tf.load_op_library(path)
    except (tf.errors.OpError, OSError) as error:  # e.g. built against another TensorFlow
        warnings.warn(f"kbnn's quantizer ops ({path}) do not load into this TensorFlow "
                      f"({error}); training uses TensorFlow's own ops, with the same results. "
                      f"Rebuild them with `pip install -e .` to train faster.", stacklevel=3)
        return None


def available():
    """Whether the ops library is built and loads into this TensorFlow."""
    return _library() is not None


def enabled():
    """Whether models traced now train with these ops.

    Not where `KBNN_QUANTIZER_OPS=0`, inside `disabled()`, without the library,
    or where TensorFlow sees a GPU (the ops have CPU kernels only).
    """
    return (os.environ.get(_ENV, "1") != "0" and not getattr(_state, "disabled", False)
            and available() and not tf.config.list_logical_devices("GPU"))


@contextlib.contextmanager
def disabled():
    """Within the block, traced training steps use TensorFlow's own ops (per thread).

    A model's training step is traced at its first call, so that call must be
    inside the block.

    >>> with kbnn.quantizer_ops.disabled():
    ...     kbnn.quantizer_ops.enabled()
    False
    """
    previous = getattr(_state, "disabled", False)
    _state.disabled = True
    try:
        yield
    finally:
        _state.disabled = previous


def _in_xla_function():
    try:  # private TensorFlow; tests/test_quantizer_ops.py trains with jit_compile=True
        from tensorflow.python.ops import control_flow_util
    except ImportError:
        return False
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def usable(x):
    """Whether a quantizer may use these ops on tensor `x` now (see `enabled`)."""
    return tf.as_dtype(x.dtype) == tf.float32 and enabled() and not _in_xla_function()


def _ops():
    library = _library()
    if library is None:
        raise RuntimeError(
            "kbnn's quantizer ops are not available: no _quantizer_ops*.so next to "
            f"{__file__}, or it did not load (a warning said why). Build them with a C "
            "compiler: `pip install -e .` from the kbnn checkout (or `python setup.py "
            "build_ext --inplace`). kbnn's quantizers run TensorFlow's own ops without them.")
    return library


def sign(x):
    """sign(x) with sign(0) = sign(-0) = +1 and sign(NaN) = -1, as `kbnn.quantizers.sign`.

    >>> kbnn.quantizer_ops.sign([-0.0, 3.0, -2.0]).numpy()
    array([ 1.,  1., -1.], dtype=float32)
    """
    return _ops().kbnn_sign(tf.convert_to_tensor(x, tf.float32))


def sign_and_mask(x, clip_value):
    """(sign(x), |x| <= clip_value): a binarizer's output and its straight-through mask.

    The mask is false for NaN, as TensorFlow's `tf.abs(x) <= clip_value`.
    """
    return _ops().kbnn_sign_and_mask(tf.convert_to_tensor(x, tf.float32),
                                     clip_value=float(clip_value))


def stochastic_sign_and_mask(x, noise, clip_value):
    """(where(noise < hard_sigmoid(x), 1, -1), |x| <= clip_value): `stochastic_sign`'s
    output for uniform `noise` of x's shape, and its straight-through mask.

    >>> y, keep = kbnn.quantizer_ops.stochastic_sign_and_mask([0.0, 0.0], [0.25, 0.75], 1.0)
    >>> y.numpy()
    array([ 1., -1.], dtype=float32)
    """
    return _ops().kbnn_stochastic_sign_and_mask(tf.convert_to_tensor(x, tf.float32),
                                                tf.convert_to_tensor(noise, tf.float32),
                                                clip_value=float(clip_value))


def masked_gradient(dy, keep):
    """dy * cast(keep): the straight-through gradient, -0.0 or NaN where dy * 0 is.

    >>> kbnn.quantizer_ops.masked_gradient([2.0, -3.0], [True, False]).numpy()
    array([ 2., -0.], dtype=float32)
    """
    return _ops().kbnn_masked_gradient(tf.convert_to_tensor(dy, tf.float32),
                                       tf.convert_to_tensor(keep, tf.bool))
