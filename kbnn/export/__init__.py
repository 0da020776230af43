"""Export kbnn models to TFLite with 1-bit binary weights, for the stock LiteRT runtime.

>>> import keras, numpy as np, kbnn
>>> model = keras.Sequential([keras.Input((16,)), kbnn.layers.QuantDense(
...     4, kernel_quantizer="ste_sign", use_bias=False)])
>>> tflite_bytes = kbnn.export.to_tflite(model)          # packed binary kernels
>>> inputs = np.random.default_rng(0).random((100, 16), np.float32)
>>> kbnn.export.verify.compare(model, tflite_bytes, inputs).top1_agreement
1.0

or from the shell: `python -m kbnn.export --tflite MODEL.keras -o MODEL.tflite --report`.
The file uses builtin TFLite ops only (no custom or Flex ops), so LiteRT as
shipped on Android and iOS runs it.

The export runs in visible steps (`export_tflite`):

1. **plan** (`kbnn.export.plan`): one frozen `LayerPlan` per layer, read from
   the model's weights with no tracing: its design, stored kernel, folded
   batch norm and per-channel scale and offset, and what it costs;
2. **emit** (`kbnn.export.graph`): the TensorFlow ops of each plan, as a
   `tf.function`;
3. **fold** (the TFLite converter): constants are folded and the builtin
   ops written into a flatbuffer; what the plans keep packed stays packed;
4. **verify** (`kbnn.export.verify`, run by the CLI): LiteRT against Keras.

`kbnn.export.bits` holds the bit convention.
"""

import dataclasses
import numbers

import tensorflow as tf

from kbnn.export import bits, graph, lowbit, plan, verify
from kbnn.files import write_atomically  # noqa: F401  (kept as kbnn.export.write_atomically)
from kbnn.export.plan import (WEIGHT_MODES, XOR_POPCOUNT_MIN_WEIGHTS, ExportError, LayerPlan,
                              plan_model)
from kbnn.tables import render_table

__all__ = ["to_tflite", "export_tflite", "ExportResult", "ExportError", "LayerPlan",
           "plan_model", "WEIGHT_MODES", "XOR_POPCOUNT_MIN_WEIGHTS", "bits", "graph", "lowbit",
           "plan", "verify"]


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """A converted model: the file's bytes and the plan of each layer."""

    tflite: bytes
    plans: tuple
    weights: str
    batch_size: int = None

    @property
    def floor_bytes(self):
        """Binary weights / 8 + 4 bytes per float value left after folding, whichever
        `weights` mode stored the binary kernels (so float and int8 files show what
        they cost over the 1-bit floor)."""
        return sum(p.floor_bits for p in self.plans) / 8

    def report(self):
        """A table of each layer's design and storage, then the file size and floor."""
        header = ("layer", "kind", "design", "weights", "bits stored", "bytes", "folded")
        rows = [(p.name, p.kind, p.design, f"{p.weights:,}", f"{p.bits:,}", f"{p.bytes:,}",
                 p.folded) for p in self.plans]
        lines = [render_table(header, rows, align="lllrrrl")]
        size, floor = len(self.tflite), self.floor_bytes
        ratio = f"{size / floor:.3f}" if floor else "n/a (no parameters)"
        lines.append(f"file size {size:,} bytes ({self.weights} weights); floor "
                     f"{floor:,.0f} bytes; size / floor = {ratio}")
        lines.append(f"runs on: {lowbit.MIN_RUNTIME[self.weights]}, no plugin")
        return "\n".join(lines)


def convert(function, model, weights="packed"):
    """Step 3, the fold: the TFLite converter turns the emitted `function` into a file."""
    concrete = function.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if weights in plan.INT_BITS:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    try:
        tflite = converter.convert()
    except Exception as error:  # the converter raises several unrelated types
        raise ExportError(f"TFLite conversion of model {model.name!r} failed: {error}") from error
    if weights in ("int4", "int2"):
        tflite = lowbit.store_low_bit(tflite, plan.INT_BITS[weights])[0]
    return tflite


def export_tflite(model, weights="packed", batch_size=None,
                  xor_popcount_min_weights=XOR_POPCOUNT_MIN_WEIGHTS):
    """Convert `model` and return an `ExportResult` (the bytes and each layer's plan).

    `weights` is one of `WEIGHT_MODES`. `batch_size=None` gives the file a
    dynamic batch dimension; a number fixes it (runtimes such as LiteRT.js in
    the browser want static shapes). Dense layers with binary inputs and at
    least `xor_popcount_min_weights` weights use the XOR-popcount design.
    """
    plans = plan_model(model, weights=weights, xor_popcount_min_weights=xor_popcount_min_weights)
    function = graph.inference_function(model, plans, batch_size=_batch_size(batch_size))
    return ExportResult(convert(function, model, weights), plans, weights, batch_size)


def _batch_size(batch_size):
    if batch_size is None:
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or \
            batch_size < 1:
        raise ExportError(f"batch_size={batch_size!r}: give a whole number >= 1, or None "
                          f"for a dynamic batch.")
    return int(batch_size)


def to_tflite(model, weights="packed", batch_size=None):
    """The `.tflite` bytes of `model`, binary kernels packed 1 bit per weight.

    >>> import keras, kbnn
    >>> model = keras.Sequential([keras.Input((16,)), kbnn.layers.QuantDense(
    ...     4, kernel_quantizer="ste_sign", use_bias=False)])
    >>> kbnn.export.to_tflite(model)[4:8]                 # a TFLite flatbuffer
    b'TFL3'
    """
    return export_tflite(model, weights=weights, batch_size=batch_size).tflite
