"""Bit-level model summary: 1-bit and 32-bit parameters, memory, MACs.

>>> import keras, kbnn
>>> model = keras.Sequential([
...     keras.Input((784,)),
...     kbnn.layers.QuantDense(128, kernel_quantizer="ste_sign", use_bias=False),
...     kbnn.layers.QuantDense(10, input_quantizer="ste_sign",
...                            kernel_quantizer="ste_sign"),
... ])
>>> s = kbnn.summary(model, print_fn=None)   # print_fn=print (default) prints the table
>>> s.params_1bit, s.params_32bit, s.memory_bytes
(101632, 10, 12744.0)

A weight counts as 1-bit when the layer's kernel quantizer is binary
(`kbnn.quantizers.is_binary`); every other weight (biases, batch-norm
statistics, float kernels) counts as 32-bit. Memory is
params_1bit / 8 + params_32bit * 4 bytes. A MAC is binary when both the
layer's input and kernel quantizers are binary (an XNOR-popcount on
hardware), and float otherwise.
"""

import dataclasses
import math

import keras

from kbnn import context, quantizers
from kbnn.tables import render_table

__all__ = ["LayerSummary", "ModelSummary", "summary"]


@dataclasses.dataclass(frozen=True)
class LayerSummary:
    """The numbers of one layer."""

    name: str
    kind: str
    output_shape: tuple
    params_1bit: int
    params_32bit: int
    binary_macs: int
    float_macs: int

    @property
    def memory_bytes(self):
        return self.params_1bit / 8 + self.params_32bit * 4


@dataclasses.dataclass(frozen=True)
class ModelSummary:
    """Per-layer numbers and their totals; `str()` gives the table."""

    name: str
    layers: tuple

    def _total(self, field):
        return sum(getattr(layer, field) for layer in self.layers)

    params_1bit = property(lambda self: self._total("params_1bit"))
    params_32bit = property(lambda self: self._total("params_32bit"))
    binary_macs = property(lambda self: self._total("binary_macs"))
    float_macs = property(lambda self: self._total("float_macs"))
    memory_bytes = property(lambda self: self._total("memory_bytes"))

    @property
    def float32_memory_bytes(self):
        """The memory of the same parameters all stored as float32."""
        return (self.params_1bit + self.params_32bit) * 4

    def __str__(self):
        header = ("Layer (type)", "Output shape", "1-bit params", "32-bit params",
                  "Memory (KiB)", "Binary MACs", "Float MACs")
        rows = [
            (f"{l.name} ({l.kind})", str(l.output_shape), f"{l.params_1bit:,}",
             f"{l.params_32bit:,}", f"{l.memory_bytes / 1024:,.2f}",
             f"{l.binary_macs:,}", f"{l.float_macs:,}")
            for l in self.layers
        ]
        total = ("Total", "", f"{self.params_1bit:,}", f"{self.params_32bit:,}",
                 f"{self.memory_bytes / 1024:,.2f}", f"{self.binary_macs:,}",
                 f"{self.float_macs:,}")
        ratio = self.float32_memory_bytes / self.memory_bytes if self.memory_bytes else 1.0
        return "\n".join([
            f'Model "{self.name}"',
            render_table(header, rows, align="llrrrrr", total=total, rules=True),
            f"Memory: {self.memory_bytes / 1024:,.2f} KiB; as float32: "
            f"{self.float32_memory_bytes / 1024:,.2f} KiB ({ratio:.1f}x smaller)",
        ])


def _macs(layer):
    """Multiply-accumulates per example of a dense or convolution layer."""
    out = tuple(layer.output.shape[1:])
    if isinstance(layer, keras.layers.Dense):
        return math.prod(out) * layer.kernel.shape[0]
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return math.prod(out) * math.prod(layer.kernel_size)
    if isinstance(layer, keras.layers.Conv2D):
        return math.prod(out) * math.prod(layer.kernel.shape[:-1])
    return 0


def _layer_summary(layer):
    kernel_quantizer = getattr(layer, "kernel_quantizer", None)
    input_quantizer = getattr(layer, "input_quantizer", None)
    binary_kernel = quantizers.is_binary(kernel_quantizer)
    params_1bit = params_32bit = 0
    for variable in layer.weights:  # Keras leaves random-seed state out of weights
        count = math.prod(variable.shape)
        if binary_kernel and variable is layer.kernel:
            params_1bit += count
        else:
            params_32bit += count
    macs = _macs(layer)
    binary_macs = macs if binary_kernel and quantizers.is_binary(input_quantizer) else 0
    return LayerSummary(
        name=layer.name,
        kind=type(layer).__name__,
        output_shape=tuple(layer.output.shape),
        params_1bit=params_1bit,
        params_32bit=params_32bit,
        binary_macs=binary_macs,
        float_macs=macs - binary_macs,
    )


def _leaf_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaf_layers(layer)
        else:
            yield layer


def summary(model, print_fn=print):
    """Print the bit-level table of a built model and return its `ModelSummary`.

    >>> import keras, kbnn
    >>> model = keras.Sequential([keras.Input((784,)), kbnn.layers.QuantDense(
    ...     128, kernel_quantizer="ste_sign", use_bias=False)])
    >>> kbnn.summary(model, print_fn=None).layers[0].params_1bit
    100352

    Pass `print_fn=None` to get the numbers without printing.
    """
    if not model.built:
        raise ValueError(
            f"Model {model.name!r} is not built, so its weights have no shape yet. "
            f"Give it an input (keras.Input(...)) or call model.build(input_shape)."
        )
    with context.quantized_scope(False):  # count the variables, not quantized views
        layers = tuple(_layer_summary(l) for l in _leaf_layers(model))
    result = ModelSummary(name=model.name, layers=layers)
    if print_fn is not None:
        print_fn(str(result))
    return result
