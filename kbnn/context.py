"""`quantized_scope`: inside it, kbnn layers list their kernels quantized (Larq's `larq.context`).

>>> import keras, numpy as np, kbnn
>>> model = keras.Sequential([keras.Input((3,)), kbnn.layers.QuantDense(
...     2, kernel_quantizer="ste_sign", use_bias=False)])
>>> with kbnn.context.quantized_scope(True):
...     binary = model.get_weights()              # the kernel as the layer computes with it
>>> sorted(np.unique(binary[0]).tolist())
[-1.0, 1.0]
>>> len(np.unique(model.get_weights()[0]))           # outside: the 6 latent real values
6

Inside `quantized_scope(True)` a quantized layer's `weights` (and so
`get_weights()` of the layer or of any model holding it) give each kernel
through its quantizer, in inference mode; `set_weights` still writes the
latent variables, as in Larq. The variables themselves (`layer.kernel`), the
optimizer and saved files keep the latent values. The scope is per thread.
"""

import contextlib
import threading

__all__ = ["quantized_scope", "should_quantize", "metrics_scope", "get_training_metrics"]

_state = threading.local()
_training_metrics = set()
_KNOWN_METRICS = ("flip_ratio",)


@contextlib.contextmanager
def quantized_scope(quantize):
    """Within the block, quantized layers list quantized kernels if `quantize` is true.

    >>> with kbnn.context.quantized_scope(True):
    ...     kbnn.context.should_quantize()
    True
    """
    previous = should_quantize()
    _state.quantize = bool(quantize)
    try:
        yield quantize
    finally:
        _state.quantize = previous


def should_quantize():
    """Whether the innermost `quantized_scope` of this thread quantizes (False outside any)."""
    return getattr(_state, "quantize", False)


@contextlib.contextmanager
def metrics_scope(metrics=()):
    """Kernel quantizers of kbnn layers built in the block get these training `metrics`.

    Only for quantizers given without their own `metrics`; "flip_ratio" is
    the one known metric (`kbnn.metrics.FlipRatio`).

    >>> with kbnn.context.metrics_scope(["flip_ratio"]):
    ...     layer = kbnn.layers.QuantDense(3, kernel_quantizer="ste_sign")
    >>> layer.kernel_quantizer.training_metrics
    ['flip_ratio']
    """
    unknown = [m for m in metrics if m not in _KNOWN_METRICS]
    if unknown:
        raise ValueError(f"Unknown training metric {unknown[0]!r}; known: "
                         f"{', '.join(_KNOWN_METRICS)}.")
    previous = set(_training_metrics)
    _training_metrics.update(metrics)
    try:
        yield _training_metrics
    finally:
        _training_metrics.clear()
        _training_metrics.update(previous)


def get_training_metrics():
    """The (live) set of training metrics of the enclosing `metrics_scope`s."""
    return _training_metrics
