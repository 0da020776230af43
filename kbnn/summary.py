"""Bit-level model summary: parameters per bit width, memory, MACs per precision.

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
>>> s.params_by_bits, s.macs_by_precision
({1: 101632, 32: 10}, {1: 1280, 32: 100352})

What Larq's `larq.models.summary` reports: a quantized kernel counts at
its quantizer's precision (1 for the binary ones, `kbnn.quantizers.is_binary`;
2 for `SteTern`; k for `DoReFa(k_bit=k)`); every other weight (biases,
batch-norm statistics, float kernels, kernels under `NoOp`, which does not
quantize) at 32 bits. Memory is the sum of bits / 8 bytes. A MAC's precision
is the larger of the layer's input precision (its input quantizer's; 32
without one) and the kernel's: 1 means both are binary (an XNOR-popcount on
hardware). Unlike Larq, batch-norm layers count all four of their stored
values per channel, and transposed convolutions count their MACs.
"""

import dataclasses
import math

import keras

from kbnn import context, quantizers
from kbnn.tables import render_table

__all__ = ["LayerSummary", "ModelSummary", "summary"]


def _add(counts, key, n):
    if n:
        counts[key] = counts.get(key, 0) + n


def _bits(quantizer):
    """The bits a value quantized by `quantizer` is stored in (32 if not quantized)."""
    if quantizers.is_binary(quantizer):
        return 1
    precision = getattr(quantizer, "precision", None)
    if isinstance(quantizer, quantizers.NoOp) or not isinstance(precision, int):
        return 32
    return precision


@dataclasses.dataclass(frozen=True)
class LayerSummary:
    """The numbers of one layer; counts by bit width are dicts {bits: count}."""

    name: str
    kind: str
    output_shape: tuple
    input_bits: object        # the input quantizer's precision; None without one
    params_by_bits: dict
    trainable_params: int
    macs_by_precision: dict

    params = property(lambda self: sum(self.params_by_bits.values()))
    params_1bit = property(lambda self: self.params_by_bits.get(1, 0))
    params_32bit = property(lambda self: self.params_by_bits.get(32, 0))
    binary_macs = property(lambda self: self.macs_by_precision.get(1, 0))
    float_macs = property(lambda self: self.macs_by_precision.get(32, 0))
    macs = property(lambda self: sum(self.macs_by_precision.values()))

    @property
    def memory_bytes(self):
        return sum(bits * n for bits, n in self.params_by_bits.items()) / 8

    @property
    def int8_float_memory_bytes(self):
        """The memory if weights of more than 8 bits were stored in 8."""
        return sum(min(bits, 8) * n for bits, n in self.params_by_bits.items()) / 8


@dataclasses.dataclass(frozen=True)
class ModelSummary:
    """Per-layer numbers and their totals; `str()` gives the table."""

    name: str
    layers: tuple

    def _total(self, field):
        return sum(getattr(layer, field) for layer in self.layers)

    def _merged(self, field):
        counts = {}
        for layer in self.layers:
            for key, n in getattr(layer, field).items():
                _add(counts, key, n)
        return dict(sorted(counts.items()))

    params_by_bits = property(lambda self: self._merged("params_by_bits"))
    macs_by_precision = property(lambda self: self._merged("macs_by_precision"))
    params = property(lambda self: self._total("params"))
    trainable_params = property(lambda self: self._total("trainable_params"))
    non_trainable_params = property(lambda self: self.params - self.trainable_params)
    params_1bit = property(lambda self: self._total("params_1bit"))
    params_32bit = property(lambda self: self._total("params_32bit"))
    binary_macs = property(lambda self: self._total("binary_macs"))
    float_macs = property(lambda self: self._total("float_macs"))
    macs = property(lambda self: self._total("macs"))
    memory_bytes = property(lambda self: self._total("memory_bytes"))
    int8_float_memory_bytes = property(lambda self: self._total("int8_float_memory_bytes"))

    @property
    def float32_memory_bytes(self):
        """The memory of the same parameters all stored as float32."""
        return self.params * 4

    @property
    def compression_ratio(self):
        """float32 memory / memory (1.0 for a model without parameters)."""
        return self.float32_memory_bytes / self.memory_bytes if self.memory_bytes else 1.0

    def mac_ratio(self, precision):
        """The fraction of all MACs at `precision` (1: binarized, 2: ternarized)."""
        return self.macs_by_precision.get(precision, 0) / self.macs if self.macs else 0.0

    def __str__(self):
        # 1-bit and 32-bit columns always, so tables of different models line up.
        bits = sorted({1, 32, *self.params_by_bits})
        precisions = sorted({1, 32, *self.macs_by_precision})
        header = ("Layer (type)", "Output shape", "Input bits",
                  *(f"{b}-bit params" for b in bits), "Memory (KiB)",
                  *(f"{p}-bit MACs" for p in precisions))

        def cells(counts, keys):
            return tuple(f"{counts.get(key, 0):,}" for key in keys)

        rows = [
            (f"{l.name} ({l.kind})", str(l.output_shape),
             "-" if l.input_bits is None else str(l.input_bits),
             *cells(l.params_by_bits, bits), f"{l.memory_bytes / 1024:,.2f}",
             *cells(l.macs_by_precision, precisions))
            for l in self.layers
        ]
        total = ("Total", "", "", *cells(self.params_by_bits, bits),
                 f"{self.memory_bytes / 1024:,.2f}", *cells(self.macs_by_precision, precisions))
        macs = f"MACs: {self.macs:,}; binarized {self.mac_ratio(1):.2%}"
        if self.mac_ratio(2):
            macs += f", ternarized {self.mac_ratio(2):.2%}"
        return "\n".join([
            f'Model "{self.name}"',
            render_table(header, rows, align="lll" + "r" * (len(header) - 3), total=total,
                         rules=True),
            f"Params: {self.params:,} (trainable {self.trainable_params:,}, "
            f"non-trainable {self.non_trainable_params:,})",
            f"Memory: {self.memory_bytes / 1024:,.2f} KiB; as float32: "
            f"{self.float32_memory_bytes / 1024:,.2f} KiB ({self.compression_ratio:.1f}x "
            f"smaller); with 8-bit float weights: {self.int8_float_memory_bytes / 1024:,.2f} KiB",
            macs,
        ])


def _spatial(shape, layer):
    """The spatial positions of a (batch, ..., channels) or channels_first shape."""
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        return math.prod(shape[2:])
    return math.prod(shape[1:-1])


def _mac_kernels(layer):
    """[(kernel, positions it is applied at)]: each kernel's MACs are its size times that."""
    out = tuple(layer.output.shape)
    if isinstance(layer, keras.layers.Dense):
        return [(layer.kernel, math.prod(out[1:-1]))]
    if isinstance(layer, (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)):
        return [(layer.depthwise_kernel, _spatial(out, layer)),
                (layer.pointwise_kernel, _spatial(out, layer))]
    if isinstance(layer, (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
                          keras.layers.Conv3DTranspose)):
        return [(layer.kernel, _spatial(tuple(layer.input.shape), layer))]
    if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
                          keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)):
        return [(layer.kernel, _spatial(out, layer))]
    return []


def _layer_summary(layer):
    quantizer_of = {id(v): q for v, q in getattr(layer, "quantized_kernels", list)()}
    trainable = {id(v) for v in layer.trainable_weights}
    params, trainable_params = {}, 0
    for variable in layer.weights:  # Keras leaves random-seed state out of weights
        count = math.prod(variable.shape)
        _add(params, _bits(quantizer_of.get(id(variable))), count)
        trainable_params += count if id(variable) in trainable else 0
    input_quantizer = getattr(layer, "input_quantizer", None)
    input_bits = None if input_quantizer is None else _bits(input_quantizer)
    macs = {}
    for kernel, positions in _mac_kernels(layer):
        kernel_bits = _bits(quantizer_of.get(id(kernel)))
        _add(macs, max(input_bits or 32, kernel_bits), math.prod(kernel.shape) * positions)
    return LayerSummary(
        name=layer.name, kind=type(layer).__name__, output_shape=tuple(layer.output.shape),
        input_bits=input_bits, params_by_bits=dict(sorted(params.items())),
        trainable_params=trainable_params, macs_by_precision=dict(sorted(macs.items())),
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
