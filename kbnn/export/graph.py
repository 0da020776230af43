"""The inference graph of a Keras model, rebuilt for TFLite with packed binary kernels.

>>> import keras, kbnn
>>> from kbnn.export.graph import inference_function
>>> model = keras.Sequential([keras.Input((16,)), kbnn.layers.QuantDense(
...     4, kernel_quantizer="ste_sign", use_bias=False)])
>>> fn, builder = inference_function(model, weights="packed")   # a tf.function
>>> _ = fn.get_concrete_function()                              # traces it
>>> [(l.kind, l.design, l.packed_bits) for l in builder.layouts]  # what each layer stores
[('QuantDense', 'unpack', 64)]

Every layer whose kernel quantizer is binary (`kbnn.quantizers.is_binary`)
gets its quantized kernel stored as int32 words of 1-bit weights
(`kbnn.export.bits`). The converter folds any op whose inputs are all
constants, so the words first meet run-time data: a BITWISE_XOR with a zero
the converter cannot prove (the batch size shifted right by 31). Then they
are bit-cast to bytes, each byte GATHERs its eight +-1 (or 0/1) values from a
256x8 table that is itself computed at run time (so it costs no file bytes),
and the unpacked kernel feeds a builtin FULLY_CONNECTED, CONV_2D or
DEPTHWISE_CONV_2D. A batch norm right after a binary layer (with a linear
activation) folds into that layer's per-channel scale and offset.

Large dense layers whose input is binarized to -1/+1 too (at least
`XOR_POPCOUNT_MIN_WEIGHTS` weights) skip the unpacking: their rows, packed
one by one (`bits.pack_rows`), are XORed with the packed signs of the input
and the dot product is `K - 2 * popcount`, counted 16 bits at a time by
GATHERing from a 65,536-entry table (256 KiB, stored once per file). On the
stock runtime this is 2.5-5x faster than unpacking into a dynamic-weight
FULLY_CONNECTED at 1024x1024 to 4096x4096; below the threshold the table
would outweigh the weights.

`weights="float"` stores the quantized kernels as float32 constants, and
"int8" lets the converter store them as int8 (dynamic-range quantization):
larger files that run faster on the stock runtime.
"""

import dataclasses
import inspect

import keras
import numpy as np
import tensorflow as tf

from kbnn import quantizers
from kbnn.export import bits as bitlib

__all__ = ["ExportError", "LayerLayout", "inference_function", "WEIGHT_MODES",
           "XOR_POPCOUNT_MIN_WEIGHTS"]

WEIGHT_MODES = ("packed", "float", "int8")

# Dense layers with binary inputs and at least this many weights use XOR-popcount.
XOR_POPCOUNT_MIN_WEIGHTS = 1 << 22


class ExportError(ValueError):
    """A model, layer or file that the exporter cannot handle; the message says why."""


@dataclasses.dataclass
class LayerLayout:
    """What the export stores for one layer (for `--report`)."""

    name: str
    kind: str
    weights: int = 0            # parameters of the Keras layer
    packed_bits: int = 0        # binary weights stored at 1 bit each
    float_values: int = 0       # float32 values stored (after folding)
    int8_values: int = 0        # kernel values stored as int8 (weights="int8")
    packed_words: int = 0       # int32 words holding the packed bits (with padding)
    table_values: int = 0       # float32 lookup-table entries (not model parameters)
    design: str = ""            # how a kernel is computed: unpack, xor-popcount, float, int8
    binary_weights: int = 0     # weights of a binary kernel, however they are stored
    folded: str = ""            # the batch norm folded into this layer, if any

    @property
    def bits(self):
        """Bits of model payload: 1 per packed weight, 32 per float, 8 per int8 value."""
        return self.packed_bits + 32 * self.float_values + 8 * self.int8_values

    @property
    def floor_bits(self):
        """The physical floor: 1 bit per binary weight (whatever `weights` mode stored
        it), 32 per float value, 8 per other int8 value."""
        stored = {"float": 32, "int8": 8}.get(self.design, 1)
        return self.bits - (stored - 1) * self.binary_weights

    @property
    def bytes(self):
        """Bytes as stored: packed words (padding included), floats, int8, tables."""
        return (self.bits - self.packed_bits) // 8 + 4 * (self.packed_words + self.table_values)


# Layers exported by calling the Keras layer itself in inference mode: their
# TensorFlow ops are builtin TFLite ops (identity at inference for dropout
# and noise layers).
_PASS_THROUGH = tuple(
    getattr(keras.layers, name) for name in (
        "InputLayer", "Flatten", "Reshape", "Permute", "Dropout", "SpatialDropout1D",
        "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
        "ActivityRegularization", "Identity", "MaxPooling2D", "AveragePooling2D",
        "GlobalAveragePooling2D", "GlobalMaxPooling2D", "ZeroPadding2D", "Cropping2D",
        "ReLU", "LeakyReLU", "ELU", "Softmax", "Activation", "Rescaling",
        "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate",
    ) if hasattr(keras.layers, name)
)
_KERNEL_LAYERS = (keras.layers.Dense, keras.layers.Conv2D, keras.layers.DepthwiseConv2D)


def _outputs_signs(quantizer):
    """Whether `quantizer` maps every input to exactly -1 or +1 (so its output packs)."""
    if not quantizers.is_binary(quantizer):
        return False
    probe = np.full((1, 1), 3.0, np.float32)  # a data-dependent scale would show as 3
    with tf.init_scope():  # evaluate eagerly while the function is traced
        low, high = (np.asarray(v) for v in quantizer.levels(probe))
    return bool(np.all(low == -1.0) and np.all(high == 1.0))


def _has_binary_kernel(layer):
    return (isinstance(layer, _KERNEL_LAYERS)
            and quantizers.is_binary(getattr(layer, "kernel_quantizer", None)))


def _batch_norm_affine(bn):
    """(scale, offset) per channel of an inference-mode batch norm on the last axis."""
    axis = bn.axis if isinstance(bn.axis, int) else bn.axis[0]
    if axis not in (-1, len(bn.input.shape) - 1):
        raise ExportError(
            f"Layer {bn.name!r} (BatchNormalization) normalizes axis {bn.axis}; the "
            f"exporter handles the channel-last axis only. Use channels_last models."
        )
    with tf.init_scope():  # read weights eagerly while the function is traced
        var = np.asarray(bn.moving_variance, np.float64)
        mean = np.asarray(bn.moving_mean, np.float64)
        gamma = np.asarray(bn.gamma, np.float64) if bn.scale else np.ones_like(var)
        beta = np.asarray(bn.beta, np.float64) if bn.center else np.zeros_like(var)
    scale = gamma / np.sqrt(var + bn.epsilon)
    return scale, beta - mean * scale


def _linear_chain(model):
    """The model's layers in order if each feeds only the next one, else None."""
    if isinstance(model, keras.Sequential):
        return list(model.layers)
    layers = list(model.layers)
    for previous, layer in zip(layers, layers[1:]):
        try:
            if layer.input is not previous.output:
                return None
        except (AttributeError, ValueError):  # shared layers, several inputs
            return None
    return layers


class _Builder:
    """Emits the TensorFlow ops of each layer while the tf.function is traced."""

    def __init__(self, model, weights, batch_size=None):
        self.model = model
        self.weights = weights
        self.batch_size = batch_size
        self.layouts = []
        self._table_cache = {}

    # --- the run-time pieces -------------------------------------------------------------

    def _zero(self):
        """An int32 zero that depends on the input, so constants meeting it stay packed.

        With a dynamic batch it is the batch size shifted right by 31; with a static
        batch the converter would fold that, so it is one byte of the first input
        value shifted right by 8.
        """
        if self.batch_size is None:
            return tf.bitwise.right_shift(tf.shape(self._input)[0], 31)
        first = tf.reshape(self._input, [-1])[0]
        return tf.bitwise.right_shift(tf.cast(tf.bitcast(first, tf.uint8)[0], tf.int32), 8)

    def _unpack(self, words, count, shape, zero_low):
        """The kernel of `shape` from packed words, meeting run-time data first."""
        live = tf.bitwise.bitwise_xor(tf.constant(words), self._zero())
        if zero_low not in self._table_cache:
            self._table_cache[zero_low] = bitlib.byte_table(self._zero(), zero_low)
        return bitlib.unpack_bits_tf(live, count, shape, self._table_cache[zero_low])

    # --- layers --------------------------------------------------------------------------

    def kernel_layer(self, layer, x, bn=None):
        """Dense, Conv2D or DepthwiseConv2D (quantized or not), with `bn` folded in."""
        kind = type(layer).__name__
        layout = LayerLayout(layer.name, kind, weights=int(layer.count_params()))
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            raise ExportError(f"Layer {layer.name!r} ({kind}) uses data_format="
                              f"{layer.data_format!r}; export needs channels_last.")
        if getattr(layer, "groups", 1) != 1:
            raise ExportError(f"Layer {layer.name!r} ({kind}) uses groups={layer.groups}; "
                              f"grouped convolutions are not supported by the export.")
        input_quantizer = getattr(layer, "input_quantizer", None)
        if isinstance(input_quantizer, quantizers.MagnitudeAwareSign):
            raise ExportError(f"Layer {layer.name!r} ({kind}) quantizes its input with "
                              f"magnitude_aware_sign, whose scale is a mean over the batch; "
                              f"use it as a kernel quantizer, and ste_sign for inputs.")
        depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
        binary = _has_binary_kernel(layer)
        with tf.init_scope():  # read weights eagerly while the function is traced
            kernel = np.asarray(layer.kernel)
            bias = None if layer.bias is None else np.asarray(layer.bias, np.float64)
            if binary:
                try:
                    bits, low, high = bitlib.kernel_bits(layer.kernel_quantizer, kernel)
                except ValueError as error:
                    raise ExportError(f"Layer {layer.name!r} ({kind}): {error}") from error
            elif getattr(layer, "kernel_quantizer", None) is not None:
                kernel = np.asarray(layer.quantize_kernel(training=False))
        xor_popcount = (
            binary and self.weights == "packed" and isinstance(layer, keras.layers.Dense)
            and x.shape.rank == 2 and kernel.size >= XOR_POPCOUNT_MIN_WEIGHTS
            and _outputs_signs(input_quantizer) and np.allclose(low, -high))
        if xor_popcount:
            w, scale = None, high
        elif binary:
            w, scale = self._binary_kernel(layer, bits, low, high, layout)
        else:
            w, scale = tf.constant(kernel.astype(np.float32)), 1.0
            layout.float_values += kernel.size
            layout.design = "float"
        # Per output channel (depthwise: outputs ordered c * M + m).
        channels = kernel.shape[2] * kernel.shape[3] if depthwise else kernel.shape[-1]
        scale = np.broadcast_to(scale, (kernel.shape[2], kernel.shape[3]) if depthwise
                                else (channels,)).reshape(-1).astype(np.float64)

        if input_quantizer is not None:
            x = layer.quantize_input(x, training=False)
        if xor_popcount:
            y = self._xor_popcount_matmul(x, bits, layout)
        elif depthwise:
            y = tf.nn.depthwise_conv2d(x, w, (1, *layer.strides, 1), layer.padding.upper(),
                                       dilations=layer.dilation_rate)
        elif isinstance(layer, keras.layers.Conv2D):
            y = tf.nn.conv2d(x, w, layer.strides, layer.padding.upper(),
                             dilations=layer.dilation_rate)
        elif x.shape.rank == 2:
            y = tf.matmul(x, w)
        else:
            y = tf.tensordot(x, w, axes=1)

        offset = np.zeros(channels) if bias is None else bias
        linear = layer.activation in (None, keras.activations.linear)
        if bn is not None and linear:
            bn_scale, bn_offset = _batch_norm_affine(bn)
            scale, offset = scale * bn_scale, offset * bn_scale + bn_offset
            layout.folded = bn.name
        y = self._affine(y, scale, offset, layout)
        self.layouts.append(layout)
        if not linear:
            y = layer.activation(y)
            if bn is not None:
                y = self.batch_norm(bn, y)
        return y

    def _binary_kernel(self, layer, bits, low, high, layout):
        """The kernel's levels as a tensor of +-1 (or 0/1), and the per-channel factor."""
        if np.allclose(low, -high):
            zero_low = False          # levels -h, +h: table of -1/+1, times h
        elif np.all(low == 0):
            zero_low = True           # levels 0, h: table of 0/1, times h
        else:
            raise ExportError(f"Layer {layer.name!r} ({type(layer).__name__}): its "
                              f"quantizer's levels are neither -h/+h nor 0/h per channel.")
        layout.binary_weights = int(bits.size)
        if self.weights != "packed":
            levels = np.where(bits, 1.0, 0.0 if zero_low else -1.0).astype(np.float32)
            if self.weights == "float":
                layout.float_values += levels.size
            else:  # the converter stores this constant as int8
                layout.int8_values += levels.size
            layout.design = self.weights
            return tf.constant(levels), high
        if isinstance(layer, keras.layers.Dense):
            order = bitlib.EXPORT_AXES["dense"]
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            order = bitlib.EXPORT_AXES["depthwise"]
        else:
            order = bitlib.EXPORT_AXES["conv"]
        export_bits = np.transpose(bits, order)
        words = bitlib.pack_bits(export_bits)
        layout.packed_bits, layout.packed_words = int(export_bits.size), int(words.size)
        layout.design = "unpack"
        unpacked = self._unpack(words, export_bits.size,
                                export_bits.shape, zero_low)
        return tf.transpose(unpacked, np.argsort(order)), high

    def _xor_popcount_matmul(self, signs, bits, layout):
        """signs [B, K] of -1/+1 times the binary kernel `bits` [K, N] (1 = +1), exactly."""
        k, n = bits.shape
        words = bitlib.pack_rows(bits.T)                       # [N, W]: row j = output j
        layout.packed_bits, layout.packed_words = int(bits.size), int(words.size)
        layout.binary_weights = int(bits.size)
        layout.design = "xor-popcount"
        packed_signs = bitlib.pack_rows_tf(tf.cast(signs > 0, tf.float32))    # [B, W]
        differ = tf.bitwise.bitwise_xor(tf.constant(words), packed_signs[:, None, :])
        halves = tf.cast(tf.bitcast(differ, tf.uint16), tf.int32)             # [B, N, W, 2]
        halves = tf.reshape(halves, [-1, n, 2 * words.shape[1]])
        mismatches = tf.reduce_sum(tf.gather(self._popcount_table(), halves), -1)
        return float(k) - 2.0 * mismatches   # agreements - disagreements

    def _popcount_table(self):
        """The 65,536-entry popcount table: one constant per file, listed once in the report."""
        if "popcount16" not in self._table_cache:
            self._table_cache["popcount16"] = tf.constant(bitlib.popcount16_table())
            self.layouts.append(LayerLayout("popcount16", "lookup table", table_values=2**16))
        return self._table_cache["popcount16"]

    def _affine(self, y, scale, offset, layout):
        if not np.all(scale == 1.0):
            y = y * tf.constant(scale.astype(np.float32))
            layout.float_values += scale.size
        if np.any(offset != 0.0):
            y = y + tf.constant(offset.astype(np.float32))
            layout.float_values += offset.size
        return y

    def batch_norm(self, bn, x):
        layout = LayerLayout(bn.name, "BatchNormalization", weights=int(bn.count_params()))
        scale, offset = _batch_norm_affine(bn)
        y = self._affine(x, scale, offset, layout)
        self.layouts.append(layout)
        return y

    def other_layer(self, layer, *args, **kwargs):
        if isinstance(layer, keras.layers.BatchNormalization):
            return self.batch_norm(layer, *args)
        if not isinstance(layer, _PASS_THROUGH):
            raise ExportError(
                f"Layer {layer.name!r} of type {type(layer).__name__} cannot be exported: "
                f"the exporter handles kbnn's quantized layers, Dense, Conv2D, "
                f"DepthwiseConv2D, BatchNormalization and the Keras layers "
                f"{', '.join(sorted({c.__name__ for c in _PASS_THROUGH}))}."
            )
        if isinstance(layer, keras.layers.InputLayer):
            return args[0]
        self.layouts.append(LayerLayout(layer.name, type(layer).__name__))
        kwargs.pop("training", None)
        return layer(*args, **kwargs, training=False) if _takes_training(layer) else \
            layer(*args, **kwargs)

    # --- the whole model -------------------------------------------------------------------

    def __call__(self, x):
        self._input, self.layouts, self._table_cache = x, [], {}
        chain = _linear_chain(self.model)
        if chain is not None:
            i = 0
            while i < len(chain):
                layer = chain[i]
                if isinstance(layer, _KERNEL_LAYERS):
                    following = chain[i + 1] if i + 1 < len(chain) else None
                    bn = following if isinstance(
                        following, keras.layers.BatchNormalization) else None
                    x = self.kernel_layer(layer, x, bn)
                    i += 2 if bn is not None else 1
                else:
                    x = self.other_layer(layer, x)
                    i += 1
            return x
        # A general graph: the model's own traversal, with each layer replaced by
        # its export (no batch-norm folding across branches).
        def export_op(layer):
            if isinstance(layer, _KERNEL_LAYERS):
                return lambda inputs, **kwargs: self.kernel_layer(layer, inputs)
            return lambda *args, **kwargs: self.other_layer(layer, *args, **kwargs)

        return self.model._run_through_graph(x, operation_fn=export_op)


def _takes_training(layer):
    return "training" in inspect.signature(layer.call).parameters


def inference_function(model, weights="packed", batch_size=None):
    """A `tf.function` computing `model` at inference with binary kernels exported.

    Returns `(function, builder)`; after the function is traced,
    `builder.layouts` lists what each layer stores.
    """
    if weights not in WEIGHT_MODES:
        raise ExportError(f"weights={weights!r}: use one of {', '.join(WEIGHT_MODES)}.")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ExportError(f"Model {model.name!r} has {len(model.inputs)} inputs and "
                          f"{len(model.outputs)} outputs; the exporter handles one of each.")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(
            batch_size, (int, np.integer)) or batch_size < 1):
        raise ExportError(f"batch_size={batch_size!r}: give a whole number >= 1, or None "
                          f"for a dynamic batch.")
    builder = _Builder(model, weights, batch_size)
    shape = (batch_size, *model.inputs[0].shape[1:])
    function = tf.function(builder, input_signature=[tf.TensorSpec(shape, tf.float32)],
                           autograph=False)
    return function, builder
