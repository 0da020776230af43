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
shipped on Android and iOS runs it. See `kbnn.export.graph` for how binary
kernels are stored and `kbnn.export.bits` for the bit convention.
"""

import dataclasses
import os

import tensorflow as tf

from kbnn.export import bits, graph, verify
from kbnn.export.graph import WEIGHT_MODES, ExportError

__all__ = ["to_tflite", "export_tflite", "ExportResult", "ExportError", "WEIGHT_MODES",
           "bits", "graph", "verify"]


@dataclasses.dataclass
class ExportResult:
    """A converted model with what each layer stores."""

    tflite: bytes
    layouts: list
    weights: str

    @property
    def floor_bytes(self):
        """Binary weights / 8 + 4 bytes per float value left after folding, whichever
        `weights` mode stored the binary kernels (so float and int8 files show what
        they cost over the 1-bit floor)."""
        return sum(l.floor_bits for l in self.layouts) / 8

    def report(self):
        rows = [("layer", "kind", "design", "weights", "bits stored", "bytes", "folded")]
        for l in self.layouts:
            rows.append((l.name, l.kind, l.design, f"{l.weights:,}", f"{l.bits:,}",
                         f"{l.bytes:,}", l.folded))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) if i in (0, 1, 2, 6) else c.rjust(w)
                           for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
        size, floor = len(self.tflite), self.floor_bytes
        ratio = f"{size / floor:.3f}" if floor else "n/a (no parameters)"
        lines.append(f"file size {size:,} bytes ({self.weights} weights); floor "
                     f"{floor:,.0f} bytes; size / floor = {ratio}")
        return "\n".join(lines)


def export_tflite(model, weights="packed", batch_size=None):
    """Convert `model` and return an `ExportResult` (bytes plus per-layer layout).

    `batch_size=None` gives the file a dynamic batch dimension; a number fixes
    it (runtimes such as LiteRT.js in the browser want static shapes).
    """
    function, builder = graph.inference_function(model, weights=weights, batch_size=batch_size)
    concrete = function.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if weights == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    try:
        tflite = converter.convert()
    except Exception as error:  # the converter raises several unrelated types
        raise ExportError(f"TFLite conversion of model {model.name!r} failed: {error}") from error
    return ExportResult(tflite, builder.layouts, weights)


def to_tflite(model, weights="packed", batch_size=None):
    """The `.tflite` bytes of `model`, binary kernels packed 1 bit per weight.

    >>> import keras, kbnn
    >>> model = keras.Sequential([keras.Input((16,)), kbnn.layers.QuantDense(
    ...     4, kernel_quantizer="ste_sign", use_bias=False)])
    >>> kbnn.export.to_tflite(model)[4:8]                 # a TFLite flatbuffer
    b'TFL3'
    """
    return export_tflite(model, weights=weights, batch_size=batch_size).tflite


def write_atomically(path, data):
    """Write bytes to a temporary file beside `path`, then rename it onto `path`."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
