"""Step 2 of the export: the TensorFlow ops of a model's inference, emitted from its plans.

>>> import keras, kbnn, tensorflow as tf
>>> from kbnn.export.plan import plan_model
>>> from kbnn.export.graph import inference_function
>>> model = keras.Sequential([keras.Input((16,)), kbnn.layers.QuantDense(
...     4, kernel_quantizer="ste_sign", use_bias=False)])
>>> plans = plan_model(model, weights="packed")              # step 1 (kbnn.export.plan)
>>> fn = inference_function(model, plans)                    # a tf.function
>>> fn(tf.zeros((2, 16))).shape
TensorShape([2, 4])

Each layer's ops follow its `LayerPlan`. A packed kernel (design `unpack`)
is stored as int32 words of 1-bit weights (`kbnn.export.bits`). The
converter folds any op whose inputs are all constants, so the words first
meet run-time data: a BITWISE_XOR with a zero the converter cannot prove
(the batch size shifted right by 31; with a static batch size, a byte of
the first input value shifted right by 8). Then they are bit-cast to bytes,
each byte GATHERs its eight +-1 (or 0/1) values from a 256x8 table that is
itself computed at run time (so it costs no file bytes), and the unpacked
kernel feeds a builtin FULLY_CONNECTED, CONV_2D or DEPTHWISE_CONV_2D. The
plan's per-channel `scale` and `offset` (a folded batch norm included)
follow as one MUL and one ADD, each left out where it is the identity.

An `xor-popcount` dense layer skips the unpacking: the packed signs of its
input are XORed with the stored rows and the dot product is
`K - 2 * popcount`, counted 16 bits at a time by GATHERing from a
65,536-entry table (stored once per file). Designs `float` and `int8`
store the kernel as a float32 constant (the converter turns int8 ones
into int8). Step 3, the fold, is the converter's (`kbnn.export`).
"""

import inspect

import keras
import numpy as np
import tensorflow as tf

from kbnn.export import bits as bitlib
from kbnn.export import lowbit
from kbnn.export.plan import linear_chain
from kbnn.layers import same_padding

__all__ = ["inference_function", "run_functional"]


def run_functional(model, x, operation_fn):
    """`model`'s own traversal of its functional graph, each layer replaced by
    `operation_fn(layer)`, on the input tensor `x`.

    The one use of a private Keras API in kbnn (`Functional._run_through_graph`,
    checked on keras 3.15; `tests/test_export_private_apis.py` pins it): Keras
    has no public way to re-run a model's graph with other operations.
    """
    return model._run_through_graph(x, operation_fn=operation_fn)


def _takes_training(layer):
    return "training" in inspect.signature(layer.call).parameters


class _Emitter:
    """Emits the TensorFlow ops of each plan while the tf.function is traced."""

    def __init__(self, model, plans, batch_size=None, probe=False):
        self.model = model
        self.plans = [plan for plan in plans if plan.op != "table"]
        self.batch_size = batch_size
        self.probe = probe
        self.probe_names = []

    # --- the run-time pieces -------------------------------------------------------------

    def _zero(self):
        """An int32 zero that depends on the input, so constants meeting it stay packed."""
        if self.batch_size is None:
            return tf.bitwise.right_shift(tf.shape(self._input)[0], 31)
        first = tf.reshape(self._input, [-1])[0]  # a static batch size would fold
        return tf.bitwise.right_shift(tf.cast(tf.bitcast(first, tf.uint8)[0], tf.int32), 8)

    def _table(self, key, make):
        """A run-time table, made once per traced function."""
        if key not in self._tables:
            self._tables[key] = make()
        return self._tables[key]

    def _unpacked_kernel(self, plan):
        """The kernel's levels (+-1 or 0/1) in the Keras layout, from the packed words."""
        zero_low = plan.binary_levels == "0/h"
        live = tf.bitwise.bitwise_xor(tf.constant(plan.kernel), self._zero())
        table = self._table(zero_low, lambda: bitlib.byte_table(self._zero(), zero_low))
        unpacked = bitlib.unpack_bits_tf(live, plan.packed_bits, plan.stored_shape, table)
        return tf.transpose(unpacked, np.argsort(plan.export_axes))

    def _xor_popcount_matmul(self, signs, plan):
        """signs [B, K] of -1/+1 times the plan's binary kernel [K, N], exactly."""
        k, n = plan.kernel_shape
        packed_signs = bitlib.pack_rows_tf(tf.cast(signs > 0, tf.float32))    # [B, W]
        differ = tf.bitwise.bitwise_xor(tf.constant(plan.kernel), packed_signs[:, None, :])
        halves = tf.cast(tf.bitcast(differ, tf.uint16), tf.int32)             # [B, N, W, 2]
        halves = tf.reshape(halves, [-1, n, 2 * plan.stored_shape[1]])
        table = self._table("popcount16", lambda: tf.constant(bitlib.popcount16_table()))
        mismatches = tf.reduce_sum(tf.gather(table, halves), -1)
        return float(k) - 2.0 * mismatches   # agreements - disagreements

    @staticmethod
    def _affine(y, plan):
        if plan.applies_scale:
            y = y * tf.constant(plan.scale.astype(np.float32))
        if plan.applies_offset:
            y = y + tf.constant(plan.offset.astype(np.float32))
        return y

    # --- layers ------------------------------------------------------------------------------

    def kernel_layer(self, plan, layer, x):
        """Dense, Conv2D or DepthwiseConv2D as its plan says."""
        if plan.design == "unpack":
            w = self._unpacked_kernel(plan)
        elif plan.design != "xor-popcount":
            w = tf.constant(plan.kernel)
        if plan.input_quantizer:
            if self.probe and plan.input_encoding != "real":
                self.probe_names.append(plan.name)
                self._probes.append(x)
            x = layer.quantize_input(x, training=False)
        if plan.feed:
            x = lowbit.feed(x, plan)
        padding = plan.padding
        if plan.pad_value and padding == "SAME":
            x, padding = _pad_same(x, plan), "VALID"
        if plan.design == "xor-popcount":
            y = self._xor_popcount_matmul(x, plan)
        elif plan.op == "depthwise":
            y = tf.nn.depthwise_conv2d(x, w, (1, *plan.strides, 1), padding,
                                       dilations=plan.dilation)
        elif plan.op == "conv":
            y = tf.nn.conv2d(x, w, plan.strides, padding, dilations=plan.dilation)
        elif x.shape.rank == 2:
            y = tf.matmul(x, w)
        else:
            y = tf.tensordot(x, w, axes=1)
        y = self._affine(y, plan)
        return y if plan.activation == "linear" else layer.activation(y)

    def layer(self, plan, layer, *args, **kwargs):
        """The ops of `layer` (planned as `plan`) on its inputs."""
        if plan.op == "batch_norm":
            return self._affine(args[0], plan)
        if plan.op != "pass":
            return self.kernel_layer(plan, layer, args[0])
        kwargs.pop("training", None)
        if _takes_training(layer):
            kwargs["training"] = False
        if layer.weights:  # e.g. PReLU's alpha
            return _call_with_constant_weights(layer, *args, **kwargs)
        return layer(*args, **kwargs)

    # --- the whole model -------------------------------------------------------------------

    def __call__(self, x):
        self._input, self._tables, self._probes = x, {}, []
        self.probe_names.clear()
        if linear_chain(self.model) is not None:
            for plan in self.plans:
                x = self.layer(plan, self.model.get_layer(plan.name), x)
        else:  # a general graph: the model's own traversal, each layer by its plan
            plans = {plan.name: plan for plan in self.plans}

            def export_op(layer):
                if layer.name not in plans:  # the InputLayer
                    return lambda inputs, **kwargs: inputs
                return lambda *args, **kwargs: self.layer(plans[layer.name], layer, *args,
                                                          **kwargs)

            x = run_functional(self.model, x, export_op)
        return (x, *self._probes) if self.probe else x


def _call_with_constant_weights(layer, *args, **kwargs):
    """`layer(*args, **kwargs)` with its weights' current values as constants.

    A variable the traced function captures is written into the file as a
    resource variable (VAR_HANDLE, READ_VARIABLE) that nothing initializes:
    LiteRT then reads uninitialized memory (NaN in Real-to-Binary Net's PReLUs)
    or refuses to run. Constants are folded into the file like every kernel.
    """
    with tf.init_scope():  # read the values eagerly, outside the function being traced
        trainable, non_trainable = ([v.value.numpy() for v in variables] for variables in
                                    (layer.trainable_variables, layer.non_trainable_variables))
    constants = lambda values: [tf.constant(value) for value in values]
    outputs, _ = layer.stateless_call(constants(trainable), constants(non_trainable), *args,
                                      **kwargs)
    return outputs


def _pad_same(x, plan):
    """`x` padded as "same" padding pads it, with `plan.pad_value` (as the layer does)."""
    kernel = plan.kernel_shape[:2]
    spatial = [same_padding(int(x.shape[axis]), k, s, d) for axis, k, s, d in
               zip((1, 2), kernel, plan.strides, plan.dilation)]
    return tf.pad(x, [(0, 0), *spatial, (0, 0)], constant_values=plan.pad_value)


def inference_function(model, plans, batch_size=None, probe=False):
    """A `tf.function` computing `model` at inference, each layer as its plan says.

    `batch_size=None` leaves the batch dimension dynamic. With `probe=True`
    the function also returns the input of each layer with a binary input
    quantizer (its pre-sign activations), in the order of
    `function.probe_names` (filled when it is traced).
    """
    emitter = _Emitter(model, plans, batch_size, probe)
    shape = (batch_size, *model.inputs[0].shape[1:])
    function = tf.function(emitter, input_signature=[tf.TensorSpec(shape, tf.float32)],
                           autograph=False)
    function.probe_names = emitter.probe_names
    return function
