"""Exact integer exports: binary kernels as INT8 / INT4 / INT2 that the stock runtime's
XNNPACK multiplies, with their inputs encoded so its run-time quantization loses nothing.

>>> import keras, numpy as np, kbnn
>>> from kbnn.export import export_tflite, verify
>>> model = keras.Sequential([keras.Input((64,)),
...     kbnn.layers.QuantDense(32, kernel_quantizer="ste_sign", name="first",
...                            bias_initializer=keras.initializers.Constant(0.5 / 255)),
...     kbnn.layers.QuantDense(32, kernel_quantizer="ste_sign", input_quantizer="ste_sign",
...                            name="second")])
>>> result = export_tflite(model, weights="int2")
>>> [(p.name, p.design, p.feed, p.stored_shape) for p in result.plans]
[('first', 'int2', 'ranged', (68, 32)), ('second', 'int2', 'unit', (32, 32))]
>>> pixels = np.random.default_rng(0).integers(0, 256, (300, 64)) / np.float32(255)
>>> check = verify.compare(model, result.tflite, pixels, weights="int2")
>>> check.top1_agreement, check.max_abs_diff < 1e-4, check.boundary_ties
(1.0, True, 0)

(The half-step bias keeps the first layer's sums off zero, where Keras' own
float rounding would pick the sign.)

Why the inputs are encoded: a FULLY_CONNECTED (or CONV_2D) with integer
weights and float inputs quantizes its input to int8 at run time, per row,
over the range [min(0, row min), max(0, row max)] in 255 steps. Values on
that grid pass exactly, so the integer dot product is exact and only the
final float rescale rounds:

* ``unit``: a -1/+1 input s is fed as u = relu(s) = (s + 1) / 2 in {0, 1}
  (two grid points of any row); W s = 2 W u - rowsum(W), so `scale`
  doubles and `offset` absorbs the row sums. (+-1 itself is not on the
  grid: up to 0.42 per dot product was lost.)
* ``ranged``: a real input of the model (pixels p / 255) gets constant
  columns (dense) or one channel (conv) of 1 with zero weights, so each row
  spans exactly [0, 1] and p / 255 is on the grid. Exact for inputs in
  [0, 1] on the 1/255 grid, which is what `kbnn.data` feeds.
  Larq's ``pad_values=+-1`` pads with the unit of that value.
* ``anchored``: a -1/+1 input to a SAME-padded convolution, whose zero
  padding is neither level (so ``unit`` would need a correction that
  varies with the position): fed as it is, with one constant channel of
  7.5 (zero weights). The range is then [-1, 7.5] (step 1/30) where the
  input has a -1, else [0, 7.5] (step 1/34); -1, 0 and 1 are on both grids.

The kernel is stored as its levels (+-1 or 0/1) in float32, and the TFLite
converter's dynamic-range quantization stores it as int8 (+-127 with a
per-channel scale). For `int4` and `int2`, `store_low_bit` then rewrites
each FULLY_CONNECTED kernel whose int8 values are all -127, 0 or 127 as
INT4 / INT2 (-1, 0, 1 with the scale times 127), packed as TFLite packs
them: element i in bits (i % per_byte) * bits of byte i // per_byte.
CONV_2D has no INT4 / INT2 kernel in LiteRT, so convolutions stay int8.
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from kbnn.export.plan import INT_BITS, ExportError

__all__ = ["INT_BITS", "MIN_RUNTIME", "DYNAMIC_RANGE_MIN_WEIGHTS", "encode_plans", "feed",
           "store_low_bit", "input_columns"]

# The oldest runtime that ran each mode's files of the released MLP and CNN exactly, of
# tflite-runtime 2.14.0 and ai-edge-litert 1.0.1 ... 2.3.0 from PyPI (Linux x86-64).
MIN_RUNTIME = {
    "packed": "ai-edge-litert 1.0.1+ (tflite-runtime 2.14.0 runs it, but moved the CNN's "
              "logits by up to 2.5%)",
    "float": "ai-edge-litert 1.0.1+ (tflite-runtime 2.14.0 runs it, but moved the CNN's "
             "logits by up to 2.5%)",
    "int8": "ai-edge-litert 1.0.1+ (tflite-runtime 2.14.0 lacks FULLY_CONNECTED v12)",
    "int4": "ai-edge-litert 1.0.1+ (tflite-runtime 2.14.0 lacks FULLY_CONNECTED v12)",
    "int2": "ai-edge-litert 2.1.2+ (2.1.1 and older cannot run INT2 FULLY_CONNECTED)",
}

# The converter's dynamic-range quantization leaves kernels with fewer elements than this
# as float32 (its default `_experimental_min_elements_for_weights`).
DYNAMIC_RANGE_MIN_WEIGHTS = 1024

# The constant channel of an `anchored` feed: (7.5 + 1) / 255 = 1/30 and 7.5 / 255 = 1/34.
ANCHOR = 7.5

# Layers that pass the model's input on unchanged in value (a `ranged` feed needs it).
_VALUE_PRESERVING = (keras.layers.InputLayer, keras.layers.Flatten, keras.layers.Reshape,
                     keras.layers.Permute, keras.layers.Dropout, keras.layers.SpatialDropout2D,
                     keras.layers.GaussianNoise, keras.layers.GaussianDropout,
                     keras.layers.AlphaDropout, keras.layers.Identity)


def input_columns(plan):
    """Constant columns (dense) or channels (conv) a plan's feed appends to its input."""
    return plan.kernel.shape[-2] - plan.kernel_shape[-2] if plan.feed else 0


def _fed_from_model_input(model, layer):
    """Whether `layer`'s input is the model's input, reshaped or passed on unchanged."""
    try:
        between = keras.Model(model.inputs, layer.input).layers
    except (ValueError, TypeError, AttributeError):
        return False
    return all(isinstance(other, _VALUE_PRESERVING) for other in between)


def _input_levels(layer):
    """(low, high) of the layer's binary input quantizer, if fixed."""
    probe = np.full((1, 1), 3.0, np.float32)
    low, high = (np.asarray(v).reshape(-1) for v in layer.input_quantizer.levels(probe))
    return float(low[0]), float(high[0])


def _row_sums(plan, kernel):
    """Per output channel, the sum of the stored levels over its inputs."""
    if plan.op == "dense":
        return kernel.sum(0)
    return kernel.reshape(-1, kernel.shape[-1]).sum(0)


def _pad_rows(kernel, count):
    """`kernel` with `count` zero rows appended on its input axis (-2)."""
    pad = [(0, 0)] * kernel.ndim
    pad[-2] = (0, count)
    return np.pad(kernel, pad)


def _encode(plan, layer, model, weights):
    """The plan of one binary kernel layer in an integer mode, its input encoded."""
    modes = "--weights packed or float"
    if plan.op == "depthwise":
        raise ExportError(f"Layer {plan.name!r} ({plan.kind}): a binary depthwise convolution "
                          f"cannot be stored exactly with --weights {weights}; use {modes}.")
    design = weights if plan.op == "dense" else "int8"   # LiteRT's CONV_2D has no INT4/INT2
    kernel = np.asarray(plan.kernel, np.float32)
    if kernel.size < DYNAMIC_RANGE_MIN_WEIGHTS:
        # The converter keeps it float32: exact as it is, no encoding needed.
        return dataclasses.replace(plan, design="float")
    scale, offset = np.array(plan.scale), np.array(plan.offset)
    pad_value = plan.pad_value if plan.padding == "SAME" else 0.0
    if pad_value and not (plan.input_encoding == "signs" and pad_value in (-1.0, 1.0)):
        raise ExportError(f"Layer {plan.name!r} ({plan.kind}) pads with pad_values="
                          f"{plan.pad_value:g}, which the input encoding of --weights {weights} "
                          f"does not keep (it keeps +-1 on a -1/+1 input); use {modes}.")
    if plan.input_encoding == "real":
        if not _fed_from_model_input(model, layer):
            raise ExportError(f"Layer {plan.name!r} ({plan.kind}) has a binary kernel but real "
                              f"inputs computed inside the model, which run-time int8 "
                              f"quantization would round; it cannot be stored exactly with "
                              f"--weights {weights}; use {modes}, or give the layer a binary "
                              f"input quantizer.")
        feed, extra = "ranged", 1
    elif plan.input_encoding == "signs":
        feed, extra = "unit", 0
        if plan.op == "conv" and plan.padding == "SAME" and not pad_value:
            feed, extra = "anchored", 1
    elif _input_levels(layer) == (0.0, 1.0):
        feed, extra = "", 0     # already on every row's grid; zero padding is level 0
    else:
        raise ExportError(f"Layer {plan.name!r} ({plan.kind}): its input quantizer "
                          f"{plan.input_quantizer!r} has levels {_input_levels(layer)}, which "
                          f"cannot be fed exactly with --weights {weights}; use {modes}.")
    if feed == "unit":
        offset = offset - scale * _row_sums(plan, kernel)
        scale = 2 * scale
    if design in ("int4", "int2"):
        # TFLite packs INT4 / INT2 rows end to end; whole bytes per row keep rows aligned.
        per_byte = 8 // INT_BITS[design]
        extra += -(kernel.shape[-2] + extra) % per_byte
    if extra and not feed:
        feed = "padded"
    kernel = _pad_rows(kernel, extra)
    frozen = [np.array(a) for a in (kernel, scale, offset)]
    for array in frozen:
        array.setflags(write=False)
    # Padding +-1 (Larq's pad_values) is data like any input: fed as its unit, (p + 1) / 2.
    return dataclasses.replace(
        plan, design=design, feed=feed, stored_shape=tuple(kernel.shape),
        pad_value=(pad_value + 1) / 2 if pad_value else plan.pad_value,
        kernel=frozen[0], scale=frozen[1], offset=frozen[2])


def encode_plans(model, plans, weights):
    """`plans` of `model` for an integer `weights` mode: each binary kernel layer's input
    encoded (see the module docstring); others unchanged. Raises ExportError for a
    model with no binary kernel and for a layer that cannot be stored exactly."""
    if weights not in INT_BITS:
        return plans
    if not any(plan.binary_weights for plan in plans):
        raise ExportError(f"Model {model.name!r} has no binary kernel, so --weights {weights} "
                     f"has nothing to store as integers; use --weights float.")
    encoded = []
    for plan in plans:
        if plan.op not in ("dense", "conv", "depthwise"):
            encoded.append(plan)
        elif plan.binary_weights:
            encoded.append(_encode(plan, model.get_layer(plan.name), model, weights))
        elif plan.kernel.size >= DYNAMIC_RANGE_MIN_WEIGHTS:
            raise ExportError(f"Layer {plan.name!r} ({plan.kind}) has a real-valued kernel of "
                         f"{plan.kernel.size:,} weights, which --weights {weights} would "
                         f"round to int8; use --weights packed or float (they keep it "
                         f"float32).")
        else:
            encoded.append(plan)
    return tuple(encoded)


def feed(x, plan):
    """The input `x` of a layer (after its input quantizer) encoded as `plan.feed` says."""
    extra = input_columns(plan)
    channels = [[0, 0]] * (x.shape.rank - 1)
    if plan.feed == "unit":
        x = tf.nn.relu(x)
        return tf.pad(x, channels + [[0, extra]]) if extra else x
    if plan.feed == "padded":
        return tf.pad(x, channels + [[0, extra]])
    if plan.feed == "ranged":
        return tf.pad(x, channels + [[0, extra]], constant_values=1.0)
    if plan.feed == "anchored":
        return tf.pad(x, channels + [[0, extra]], constant_values=ANCHOR)
    return x


# --- the post-pass on the flatbuffer ---------------------------------------------------------


def _schema():
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError as error:
        raise ImportError("--weights int4 / int2 rewrite the file with LiteRT's schema: pip "
                          "install ai-edge-litert (or pip install -e '.[export]').") from error
    return schema


def _pack(values, bits):
    """Signed `values` (-1, 0, 1) as TFLite packs INT4 / INT2: LSB first within a byte."""
    per_byte = 8 // bits
    codes = (values.reshape(-1, per_byte).astype(np.int32) & ((1 << bits) - 1))
    shifts = np.arange(per_byte) * bits
    return (codes << shifts).sum(-1).astype(np.uint8)


def store_low_bit(tflite_bytes, bits):
    """(new bytes, count): each FULLY_CONNECTED int8 kernel whose values are all -127, 0
    or 127 (a binary kernel, per-channel scale, rows of whole bytes) stored as INT4
    (`bits=4`) or INT2 (`bits=2`), and every FULLY_CONNECTED told to quantize its input
    asymmetrically (so a reference kernel, like XNNPACK, keeps a [0, 1] row exact)."""
    schema = _schema()
    import flatbuffers

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(tflite_bytes, 0))
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    int_type = {4: schema.TensorType.INT4, 2: schema.TensorType.INT2}[bits]
    rewritten, per_byte = 0, 8 // bits
    for graph in model.subgraphs:
        for op in graph.operators:
            if codes[op.opcodeIndex] != schema.BuiltinOperator.FULLY_CONNECTED:
                continue
            op.builtinOptions.asymmetricQuantizeInputs = True
            tensor = graph.tensors[op.inputs[1]]
            quant = tensor.quantization
            data = model.buffers[tensor.buffer].data
            if (tensor.type != schema.TensorType.INT8 or data is None or quant is None
                    or quant.scale is None or len(quant.scale) != tensor.shape[0]
                    or quant.quantizedDimension != 0 or tensor.shape[-1] % per_byte):
                continue
            values = np.asarray(data, np.uint8).view(np.int8)
            if not np.isin(values, (-127, 0, 127)).all():
                continue
            model.buffers.append(schema.BufferT())
            model.buffers[-1].data = _pack(values // 127, bits)
            tensor.buffer, tensor.type = len(model.buffers) - 1, int_type
            quant.scale = [float(np.float32(s) * np.float32(127)) for s in quant.scale]
            quant.zeroPoint = [0] * len(quant.scale)
            rewritten += 1
    used = {t.buffer for g in model.subgraphs for t in g.tensors}
    used |= {m.buffer for m in model.metadata or ()}
    for index, buffer in enumerate(model.buffers):
        if index not in used:
            buffer.data = None  # the int8 copy of a rewritten kernel
    builder = flatbuffers.Builder(len(tflite_bytes))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output()), rewritten
