"""Step 1 of the export: what each layer of a model becomes, decided before any tracing.

>>> import keras, kbnn
>>> from kbnn.export.plan import plan_model
>>> model = keras.Sequential([keras.Input((16,)), kbnn.layers.QuantDense(
...     4, kernel_quantizer="ste_sign", use_bias=False, name="dense")])
>>> (plan,) = plan_model(model, weights="packed")
>>> plan.name, plan.op, plan.design, plan.stored_shape, plan.packed_words
('dense', 'dense', 'unpack', (4, 16), 2)
>>> plan.scale.tolist(), plan.offset.tolist()        # folded per output channel
([1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0])

`plan_model` reads the model's weights, checks every layer, and returns one
`LayerPlan` per layer: a frozen value saying how the layer is computed (its
`design`), what its kernel is stored as (`kernel`, in the layout of
`stored_shape`), which batch norm it absorbs and the resulting per-channel
`scale` and `offset`, and what that costs (`bits`, `bytes`, `floor_bits`).
The next steps only read plans: `kbnn.export.graph` emits TensorFlow ops
from them, the converter folds those ops into a file, `--report` prints
them and the verification finds the binary layers in them.

Designs of a kernel layer:

* `unpack`: a binary kernel stored 1 bit per weight (`kbnn.export.bits`),
  unpacked at run time for a builtin FULLY_CONNECTED / CONV_2D /
  DEPTHWISE_CONV_2D.
* `xor-popcount`: a large binary dense layer whose input is binarized to
  -1/+1 too (at least `xor_popcount_min_weights` weights): each output's row
  stored packed, the dot product computed as `K - 2 * popcount(row XOR
  input)` with a shared 16-bit popcount table (a plan of op "table").
* `float` / `int8`: the kernel as float32 constants (int8: the converter
  then stores them as int8). A binary kernel is stored as its levels
  (+-1 or 0/1) and the channel's level size goes into `scale`.

A new design (a kernel stored another way, an input fed in another
encoding, with its correction folded into `offset`) is one more branch of
`_kernel_design` / `_stored_kernel` and one more emitter in `graph`.
"""

import dataclasses

import keras
import numpy as np

from kbnn import quantizers
from kbnn.layers import ChannelSlice
from kbnn.export import bits as bitlib

__all__ = ["ExportError", "LayerPlan", "plan_model", "fold_batch_norm", "linear_chain",
           "WEIGHT_MODES", "XOR_POPCOUNT_MIN_WEIGHTS"]

# int4 / int2: binary dense kernels as INT4 / INT2, convolutions int8 (kbnn.export.lowbit).
WEIGHT_MODES = ("packed", "float", "int8", "int4", "int2")
# Bits per stored kernel value of the integer designs.
INT_BITS = {"int8": 8, "int4": 4, "int2": 2}

# Dense layers with binary inputs and at least this many weights use XOR-popcount by
# default: below it the 256 KiB popcount table would outweigh the weights, and on the
# stock runtime it is 2.5-5x faster than unpacking from 1024x1024 to 4096x4096.
XOR_POPCOUNT_MIN_WEIGHTS = 1 << 22


class ExportError(ValueError):
    """A model, layer or file that the exporter cannot handle; the message says why."""


def _frozen(array, dtype):
    array = np.asarray(array, dtype).copy()
    array.setflags(write=False)
    return array


@dataclasses.dataclass(frozen=True, eq=False)
class LayerPlan:
    """How one layer is exported: its design, stored kernel, folded affine and cost.

    Layers with no kernel (pooling, reshapes, ...) have op "pass" and no
    design; a batch norm that did not fold has op "batch_norm" and its own
    `scale` and `offset`; the shared popcount table has op "table".
    """

    name: str                   # the Keras layer's name ("popcount16" for the table)
    kind: str                   # the Keras class name ("lookup table" for the table)
    op: str                     # dense, conv, depthwise, batch_norm, pass, table
    design: str = ""            # kernel layers: unpack, xor-popcount, float, int8
    weights: int = 0            # parameters of the Keras layer
    binary_levels: str = ""     # binary kernels: "-h/+h" or "0/h" per output channel
    input_quantizer: str = ""   # the layer's input quantizer ("" if none)
    input_encoding: str = ""    # its outputs: "signs" (-1/+1), "binary" (other 2-level), "real"
    activation: str = ""        # the activation applied after scale and offset
    kernel_shape: tuple = ()    # the Keras kernel's shape
    stored_shape: tuple = ()    # the kernel as stored: dense [N, K], conv [O, kh, kw, I],
                                # depthwise [kh, kw, C, M]; xor-popcount [N, words per row]
    export_axes: tuple = ()     # Keras kernel axes in stored order (`bits.EXPORT_AXES`)
    strides: tuple = ()         # conv and depthwise: strides, padding, dilation
    padding: str = ""
    dilation: tuple = ()
    pad_value: float = 0.0      # conv and depthwise: what "same" padding pads with (Larq's
                                # `pad_values`; 0 is Keras's zero padding)
    binary_weights: int = 0     # weights of a binary kernel, however they are stored
    table_values: int = 0       # float32 lookup-table entries (not model parameters)
    folded: str = ""            # the batch norm folded into this layer, if any
    scale: np.ndarray = dataclasses.field(default=None, repr=False)   # per channel, float64
    offset: np.ndarray = dataclasses.field(default=None, repr=False)  # per channel, float64
    kernel: np.ndarray = dataclasses.field(default=None, repr=False)  # what the file stores
    feed: str = ""              # integer designs: how the input is encoded (kbnn.export.lowbit)

    # --- what it costs ---------------------------------------------------------------------

    @property
    def packed(self):
        """Whether the kernel is stored as int32 words of 1-bit weights."""
        return self.design in ("unpack", "xor-popcount")

    @property
    def packed_bits(self):
        """Binary weights stored at 1 bit each."""
        return self.binary_weights if self.packed else 0

    @property
    def packed_words(self):
        """int32 words holding the packed bits (with padding)."""
        return int(self.kernel.size) if self.packed else 0

    @property
    def int8_values(self):
        """Kernel values stored as integers (designs int8, int4, int2)."""
        return int(self.kernel.size) if self.design in INT_BITS else 0

    @property
    def applies_scale(self):
        """Whether the emitted graph multiplies by `scale` (it is not all ones)."""
        return self.scale is not None and not np.all(self.scale == 1.0)

    @property
    def applies_offset(self):
        """Whether the emitted graph adds `offset` (it is not all zeros)."""
        return self.offset is not None and bool(np.any(self.offset != 0.0))

    @property
    def float_values(self):
        """float32 values stored: a float kernel, and the scale and offset applied."""
        kernel = int(self.kernel.size) if self.design == "float" else 0
        return (kernel + (self.scale.size if self.applies_scale else 0)
                + (self.offset.size if self.applies_offset else 0))

    @property
    def bits(self):
        """Bits of model payload: 1 per packed weight, 32 per float, 8 / 4 / 2 per
        int8 / int4 / int2 value."""
        return (self.packed_bits + 32 * self.float_values
                + INT_BITS.get(self.design, 0) * self.int8_values)

    @property
    def floor_bits(self):
        """The physical floor: 1 bit per binary weight (whatever `weights` mode stored
        it), 32 per float value, 8 per other int8 value."""
        if self.design in INT_BITS:  # padding rows of an encoded input are not weights
            return self.bits - INT_BITS[self.design] * self.int8_values + self.binary_weights
        stored = {"float": 32}.get(self.design, 1)
        return self.bits - (stored - 1) * self.binary_weights

    @property
    def bytes(self):
        """Bytes as stored: packed words (padding included), floats, int8, tables."""
        return (self.bits - self.packed_bits) // 8 + 4 * (self.packed_words + self.table_values)


# --- which layers are what -----------------------------------------------------------------

# Layers exported by calling the Keras layer itself in inference mode: their
# TensorFlow ops are builtin TFLite ops (identity at inference for dropout
# and noise layers).
PASS_THROUGH = tuple(
    getattr(keras.layers, name) for name in (
        "InputLayer", "Flatten", "Reshape", "Permute", "Dropout", "SpatialDropout1D",
        "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
        "ActivityRegularization", "Identity", "MaxPooling2D", "AveragePooling2D",
        "GlobalAveragePooling2D", "GlobalMaxPooling2D", "ZeroPadding2D", "Cropping2D",
        "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax", "Activation", "Rescaling",
        "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate",
    ) if hasattr(keras.layers, name)
) + (ChannelSlice,)  # kbnn.layers.ChannelSlice: a builtin STRIDED_SLICE
KERNEL_LAYERS = (keras.layers.Dense, keras.layers.Conv2D, keras.layers.DepthwiseConv2D)


def _op(layer):
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return "depthwise"
    if isinstance(layer, keras.layers.Conv2D):
        return "conv"
    if isinstance(layer, keras.layers.Dense):
        return "dense"
    if isinstance(layer, keras.layers.BatchNormalization):
        return "batch_norm"
    if isinstance(layer, PASS_THROUGH):
        return "pass"
    raise ExportError(
        f"Layer {layer.name!r} of type {type(layer).__name__} cannot be exported: "
        f"the exporter handles kbnn's quantized layers, Dense, Conv2D, "
        f"DepthwiseConv2D, BatchNormalization and the Keras layers "
        f"{', '.join(sorted({c.__name__ for c in PASS_THROUGH}))}."
    )


def _outputs_signs(quantizer):
    """Whether `quantizer` maps every input to exactly -1 or +1 (so its output packs)."""
    if not quantizers.is_binary(quantizer):
        return False
    probe = np.full((1, 1), 3.0, np.float32)  # a data-dependent scale would show as 3
    low, high = (np.asarray(v) for v in quantizer.levels(probe))
    return bool(np.all(low == -1.0) and np.all(high == 1.0))


def _input_encoding(quantizer):
    if quantizer is None or not quantizers.is_binary(quantizer):
        return "real"
    return "signs" if _outputs_signs(quantizer) else "binary"


def _name(thing):
    """A quantizer's class name or an activation's function name ("" for None)."""
    if thing is None:
        return ""
    return getattr(thing, "__name__", None) or type(thing).__name__


def _activation(layer):
    """The layer's activation name; "linear" only for the identity (what folds)."""
    if layer.activation in (None, keras.activations.linear):
        return "linear"
    name = _name(layer.activation)
    return f"{name} (custom)" if name == "linear" else name


def linear_chain(model):
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


def _input_rank(layer):
    try:
        return len(layer.input.shape)
    except (AttributeError, ValueError):  # a shared layer has several inputs
        return None


# --- kernel layers ---------------------------------------------------------------------------


def _check_kernel_layer(layer, kind):
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise ExportError(f"Layer {layer.name!r} ({kind}) uses data_format="
                          f"{layer.data_format!r}; export needs channels_last.")
    if getattr(layer, "groups", 1) != 1:
        raise ExportError(f"Layer {layer.name!r} ({kind}) uses groups={layer.groups}; "
                          f"grouped convolutions are not supported by the export.")
    if isinstance(getattr(layer, "input_quantizer", None), quantizers.MagnitudeAwareSign):
        raise ExportError(f"Layer {layer.name!r} ({kind}) quantizes its input with "
                          f"magnitude_aware_sign, whose scale is a mean over the batch; "
                          f"use it as a kernel quantizer, and ste_sign for inputs.")


def _binary_levels(layer, low, high):
    if np.allclose(low, -high):
        return "-h/+h"       # stored as -1/+1, times h
    if np.all(low == 0):
        return "0/h"         # stored as 0/1, times h
    raise ExportError(f"Layer {layer.name!r} ({type(layer).__name__}): its "
                      f"quantizer's levels are neither -h/+h nor 0/h per channel.")


def _kernel_design(layer, op, binary, levels, weights, min_weights):
    """unpack, xor-popcount, float or int8: how the layer's kernel is computed."""
    if not binary:
        return "float"
    if weights != "packed":
        return weights
    if (op == "dense" and _input_rank(layer) == 2 and int(np.prod(layer.kernel.shape))
            >= min_weights and levels == "-h/+h"
            and _outputs_signs(getattr(layer, "input_quantizer", None))):
        return "xor-popcount"
    return "unpack"


def _stored_kernel(design, op, kernel, bits, levels):
    """(stored array, its shape, Keras axes in stored order) for `design`."""
    if design == "float" and bits is None:
        return kernel.astype(np.float32), kernel.shape, ()
    if design in ("float", *INT_BITS):  # the converter stores int8 ones as int8
        zero = 0.0 if levels == "0/h" else -1.0
        return np.where(bits, 1.0, zero).astype(np.float32), bits.shape, ()
    if design == "xor-popcount":   # row j = output j, each row padded to whole words
        words = bitlib.pack_rows(bits.T)
        return words, words.shape, bitlib.EXPORT_AXES["dense"]
    order = bitlib.EXPORT_AXES[op]
    export_bits = np.transpose(bits, order)
    return bitlib.pack_bits(export_bits), export_bits.shape, order


def _plan_kernel_layer(layer, weights, min_weights):
    kind, op = type(layer).__name__, _op(layer)
    _check_kernel_layer(layer, kind)
    input_quantizer = getattr(layer, "input_quantizer", None)
    binary = quantizers.is_binary(getattr(layer, "kernel_quantizer", None))
    kernel = np.asarray(layer.kernel)
    bits, levels, scale = None, "", np.float32(1.0)
    if binary:
        try:
            bits, low, high = bitlib.kernel_bits(layer.kernel_quantizer, kernel)
        except ValueError as error:
            raise ExportError(f"Layer {layer.name!r} ({kind}): {error}") from error
        levels, scale = _binary_levels(layer, low, high), high
    elif getattr(layer, "kernel_quantizer", None) is not None:
        kernel = np.asarray(layer.quantize_kernel(training=False))
    design = _kernel_design(layer, op, binary, levels, weights, min_weights)
    stored, stored_shape, axes = _stored_kernel(design, op, kernel, bits, levels)
    # Per output channel (depthwise: outputs ordered c * M + m).
    channels_shape = kernel.shape[2:] if op == "depthwise" else kernel.shape[-1:]
    scale = np.broadcast_to(scale, channels_shape).reshape(-1)
    bias = np.zeros(int(np.prod(channels_shape))) if layer.bias is None else layer.bias
    conv = {} if op == "dense" else dict(
        strides=tuple(layer.strides), padding=layer.padding.upper(),
        dilation=tuple(layer.dilation_rate),
        pad_value=float(getattr(layer, "pad_values", 0.0) or 0.0))
    return LayerPlan(
        layer.name, kind, op, design=design, weights=int(layer.count_params()),
        binary_levels=levels, input_quantizer=_name(input_quantizer),
        input_encoding=_input_encoding(input_quantizer), activation=_activation(layer),
        kernel_shape=tuple(kernel.shape), stored_shape=tuple(stored_shape),
        export_axes=tuple(axes), binary_weights=0 if bits is None else int(bits.size),
        scale=_frozen(scale, np.float64), offset=_frozen(bias, np.float64),
        kernel=_frozen(stored, stored.dtype), **conv)


# --- batch norms -----------------------------------------------------------------------------


def _batch_norm_affine(bn):
    """(scale, offset) per channel of an inference-mode batch norm on the last axis."""
    axis = bn.axis if isinstance(bn.axis, int) else bn.axis[0]
    if axis not in (-1, len(bn.input.shape) - 1):
        raise ExportError(
            f"Layer {bn.name!r} (BatchNormalization) normalizes axis {bn.axis}; the "
            f"exporter handles the channel-last axis only. Use channels_last models."
        )
    var = np.asarray(bn.moving_variance, np.float64)
    mean = np.asarray(bn.moving_mean, np.float64)
    gamma = np.asarray(bn.gamma, np.float64) if bn.scale else np.ones_like(var)
    beta = np.asarray(bn.beta, np.float64) if bn.center else np.zeros_like(var)
    scale = gamma / np.sqrt(var + bn.epsilon)
    return scale, beta - mean * scale


def _plan_layer(layer, weights, min_weights):
    op = _op(layer)
    if op in ("dense", "conv", "depthwise"):
        return _plan_kernel_layer(layer, weights, min_weights)
    if op == "batch_norm":
        scale, offset = _batch_norm_affine(layer)
        return LayerPlan(layer.name, type(layer).__name__, op,
                         weights=int(layer.count_params()),
                         scale=_frozen(scale, np.float64), offset=_frozen(offset, np.float64))
    return LayerPlan(layer.name, type(layer).__name__, op)


def fold_batch_norm(plan, bn):
    """`plan` (a kernel layer with a linear activation) with batch norm `bn` folded into
    its per-channel scale and offset.

    >>> import numpy as np
    >>> layer = LayerPlan("d", "Dense", "dense", activation="linear",
    ...                   scale=np.array([2.0]), offset=np.array([1.0]))
    >>> bn = LayerPlan("bn", "BatchNormalization", "batch_norm", weights=4,
    ...                scale=np.array([3.0]), offset=np.array([0.5]))
    >>> folded = fold_batch_norm(layer, bn)
    >>> folded.scale.tolist(), folded.offset.tolist(), folded.folded
    ([6.0], [3.5], 'bn')
    """
    if plan.activation != "linear" or bn.op != "batch_norm":
        raise ValueError(f"cannot fold {bn.name!r} into {plan.name!r}: only a batch norm "
                         f"right after a layer with a linear activation folds.")
    scale, offset = plan.scale * bn.scale, plan.offset * bn.scale + bn.offset
    return dataclasses.replace(plan, folded=bn.name, scale=_frozen(scale, np.float64),
                               offset=_frozen(offset, np.float64))


def _fold_batch_norms(plans):
    folded = []
    for plan in plans:
        previous = folded[-1] if folded else None
        if (plan.op == "batch_norm" and previous is not None and previous.design
                and not previous.folded and previous.activation == "linear"):
            folded[-1] = fold_batch_norm(previous, plan)
        else:
            folded.append(plan)
    return folded


# --- the whole model ----------------------------------------------------------------------------


POPCOUNT_TABLE = LayerPlan("popcount16", "lookup table", "table", table_values=2**16)


def check_model(model, weights):
    """Raise ExportError unless `weights` is a mode and `model` has one input and output."""
    if weights not in WEIGHT_MODES:
        raise ExportError(f"weights={weights!r}: use one of {', '.join(WEIGHT_MODES)}.")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ExportError(f"Model {model.name!r} has {len(model.inputs)} inputs and "
                          f"{len(model.outputs)} outputs; the exporter handles one of each.")


def plan_model(model, weights="packed", xor_popcount_min_weights=XOR_POPCOUNT_MIN_WEIGHTS):
    """One `LayerPlan` per exported layer of `model`, in order, as a tuple.

    In a model that is a chain of layers, a batch norm right after a kernel
    layer with a linear activation is folded into that layer's plan
    (`fold_batch_norm`); in a branching graph each batch norm keeps its own.
    The shared popcount table, if any layer needs it, is listed before the
    first such layer.
    """
    check_model(model, weights)
    chain = linear_chain(model)
    layers = chain if chain is not None else model.layers
    plans = [_plan_layer(layer, weights, xor_popcount_min_weights) for layer in layers
             if not isinstance(layer, keras.layers.InputLayer)]
    if chain is not None:
        plans = _fold_batch_norms(plans)
    from kbnn.export import lowbit  # imports this module

    plans = list(lowbit.encode_plans(model, plans, weights))
    designs = [plan.design for plan in plans]
    if "xor-popcount" in designs:
        plans.insert(designs.index("xor-popcount"), POPCOUNT_TABLE)
    return tuple(plans)
