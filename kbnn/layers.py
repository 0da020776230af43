"""Quantized Keras layers: `QuantDense`, the `QuantConv*` family, depthwise and separable.

Each subclasses its Keras layer, takes every argument of it (positional ones
in Keras's order), and adds keyword-only quantizers for the input and the
kernel(s). A binarized layer (BinaryNet style):

>>> import numpy as np, kbnn
>>> layer = kbnn.layers.QuantDense(
...     16, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
...     kernel_constraint="weight_clip", use_bias=False)
>>> tuple(layer(np.random.randn(2, 8).astype("float32")).shape)
(2, 16)

The quantizers apply in `call`, on every forward pass: the layer keeps real
(latent) weights for the optimizer and computes with their quantized values.
The computing itself is the Keras parent's own `call`, so every option of the
parent (activation, bias, strides, dilation, groups, data format, ...) works
as it does there, and without quantizers a layer computes exactly what its
parent does. The layers and their arguments are Larq's: `QuantDense`,
`QuantConv1D/2D/3D`, `QuantDepthwiseConv2D`, `QuantSeparableConv1D/2D`,
`QuantConv2DTranspose`, `QuantConv3DTranspose` (Keras 3 has no
LocallyConnected layers, so neither has kbnn). Every constraint argument of a
quantized kernel also accepts "weight_clip".

Where the input and the kernel are both binary (their quantizers are
`integer_valued`), `QuantDense` and `QuantConv1D/2D/3D` keep the input as
int8 for the backward pass instead of a float32 copy, and `compute="bfloat16"`
(keyword-only; default "float32") computes the forward product in bfloat16,
exactly (`kbnn.exact_product`): outputs and gradients are bit-identical to
float32. `set_compute(model, "bfloat16")` sets it on every layer of a model.

Loading a `.keras` file that holds these layers needs `import kbnn` first:
Keras 3 finds a custom class only in its registry (filled when kbnn is
imported) and imports no module a file names unless it belongs to Keras.
"""

import collections
import functools

import keras
import numpy as np
from keras import ops

from kbnn import constraints as kbnn_constraints
from kbnn import context, exact_product, quantizers

__all__ = [
    "QuantDense", "QuantConv1D", "QuantConv2D", "QuantConv3D", "QuantDepthwiseConv2D",
    "QuantSeparableConv1D", "QuantSeparableConv2D", "QuantConv2DTranspose",
    "QuantConv3DTranspose", "QuantizedKernel", "ChannelSlice", "PRECISIONS",
    "set_compute", "auto_compute",
]

# One quantized kernel of a layer: the attribute holding its quantizer, the
# constructor argument (and config key) naming it, the constraint argument,
# and the attribute in which the Keras parent keeps the kernel variable and
# reads it in `call`.
_Slot = collections.namedtuple("_Slot", "quantizer argument constraint variable")
_KERNEL = _Slot("kernel_quantizer", "kernel_quantizer", "kernel_constraint", "_kernel")


# Quantizers whose every output is exactly +1 or -1.
_SIGN_QUANTIZERS = (quantizers.SteSign, quantizers.StochasticSign, quantizers.ApproxSign,
                    quantizers.SwishSign)


class _QuantizerMixin:
    """Quantizes a Keras layer's input and kernels, then hands off to the layer's own `call`.

    The hook is `_slots`: where the Keras parent keeps each kernel variable
    (`_kernel` behind Dense's and Conv's `kernel` property; `kernel` itself
    in DepthwiseConv and ConvTranspose; two kernels in SeparableConv). For
    the duration of the parent's `call` each holds its quantized kernel, as
    Larq's quantized variables read quantized inside the layer's call.
    """

    _slots = (_KERNEL,)

    def __init__(self, *args, input_quantizer=None, compute="float32", **kwargs):
        kernel_quantizers = [kwargs.pop(slot.argument, None) for slot in self._slots]
        for slot in self._slots:
            if slot.constraint in kwargs:
                kwargs[slot.constraint] = kbnn_constraints.get(kwargs[slot.constraint])
        super().__init__(*args, **kwargs)
        self.compute = exact_product.check_compute(compute, f"compute of layer {self.name!r}")
        self.input_quantizer = quantizers.get(input_quantizer)
        for slot, quantizer in zip(self._slots, kernel_quantizers):
            quantizer = quantizers.get(quantizer)
            if (isinstance(quantizer, quantizers.Quantizer) and quantizer.training_metrics is None
                    and context.get_training_metrics()):
                quantizer.training_metrics = sorted(context.get_training_metrics())
            setattr(self, slot.quantizer, quantizer)

    def integer_operands(self):
        """Whether input and kernel are integer-valued, so the product is exact in int8/bfloat16.

        True when the input quantizer and every kernel quantizer are
        `integer_valued`, no LoRA adapter is added to the kernel, and padding
        pads with an integer.
        """
        pad = getattr(self, "pad_values", 0)
        return (getattr(self.input_quantizer, "integer_valued", False)
                and all(getattr(getattr(self, slot.quantizer), "integer_valued", False)
                        for slot in self._slots)
                and not getattr(self, "lora_enabled", False)
                and float(pad).is_integer() and abs(pad) <= 127)

    def sign_operands(self):
        """Whether input and kernel are exactly +-1 (padding: 0 or +-1), so that
        `compute="bfloat16"` may sum up to 512 terms at once (`kbnn.exact_product`).

        True for the sign quantizers (`SteSign`, `StochasticSign`, `ApproxSign`,
        `SwishSign`); not for 0/1 or ternary ones, whose zeros break the parity
        argument that makes 512 terms exact.
        """
        return (self.integer_operands()
                and all(isinstance(q, _SIGN_QUANTIZERS) for q in
                        [self.input_quantizer, *(getattr(self, slot.quantizer)
                                                 for slot in self._slots)])
                and abs(getattr(self, "pad_values", 0)) <= 1)

    @property
    def quantized(self):
        return self.input_quantizer is not None or bool(self.quantized_kernels())

    def quantized_kernels(self):
        """[(latent kernel variable, its quantizer)] for each kernel that has a quantizer."""
        if not self.built:
            return []
        pairs = [(getattr(self, slot.variable), getattr(self, slot.quantizer))
                 for slot in self._slots]
        return [(variable, quantizer) for variable, quantizer in pairs if quantizer is not None]

    def build(self, input_shape):
        super().build(input_shape)
        # As Larq's quantized variables: the predicate of Bop.is_binary_variable.
        for variable, quantizer in self.quantized_kernels():
            variable.precision = getattr(quantizer, "precision", None)

    @staticmethod
    def _quantize(quantizer, value, training):
        if quantizer is None:
            return value
        if isinstance(quantizer, quantizers.Quantizer):
            return quantizer(value, training=training)
        return quantizer(value)

    def quantize_input(self, inputs, training=False):
        """The inputs as the layer computes with them (inference mode by default)."""
        return self._quantize(self.input_quantizer, inputs, training)

    def quantize_kernel(self, training=False):
        """The kernel as the layer computes with it (inference mode by default)."""
        return self._quantize(self.kernel_quantizer, self.kernel, training)

    def call(self, inputs, training=None):
        inputs = self.quantize_input(inputs, training)
        swapped = []
        # object.__setattr__ bypasses Keras's attribute tracking: the latent
        # variables stay the tracked weights, the quantized tensors never are.
        try:
            for slot in self._slots:
                quantizer = getattr(self, slot.quantizer)
                if quantizer is not None:
                    latent = getattr(self, slot.variable)
                    object.__setattr__(self, slot.variable,
                                       self._quantize(quantizer, latent, training))
                    swapped.append((slot.variable, latent))
            return super().call(inputs)
        finally:
            for attribute, latent in swapped:
                object.__setattr__(self, attribute, latent)

    @property
    def weights(self):
        weights = super().weights
        if not context.should_quantize():
            return weights
        views = {id(v): QuantizedKernel(self, v, q) for v, q in self.quantized_kernels()}
        return [views.get(id(w), w) for w in weights]

    def get_config(self):
        return {
            **super().get_config(),
            "input_quantizer": quantizers.serialize(self.input_quantizer),
            "compute": self.compute,
            **{slot.argument: quantizers.serialize(getattr(self, slot.quantizer))
               for slot in self._slots},
        }


class QuantizedKernel:
    """A layer's kernel read through its quantizer, as `weights` lists it in `quantized_scope`.

    Reading (`numpy()`, `value`, `np.asarray`) gives the quantized kernel in
    inference mode; `assign` writes the latent variable (`latent`), so
    `set_weights` inside the scope works as outside it.
    """

    def __init__(self, layer, latent, quantizer):
        self._layer = layer
        self.latent = latent
        self.quantizer = quantizer

    shape = property(lambda self: self.latent.shape)
    dtype = property(lambda self: self.latent.dtype)
    name = property(lambda self: self.latent.name)
    path = property(lambda self: self.latent.path)
    trainable = property(lambda self: self.latent.trainable)

    @property
    def value(self):
        return self._layer._quantize(self.quantizer, self.latent, training=False)

    def numpy(self):
        return ops.convert_to_numpy(self.value)

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.numpy(), dtype=dtype)

    def assign(self, value):
        return self.latent.assign(value)

    def __repr__(self):
        return f"<QuantizedKernel of {self.path} through {type(self.quantizer).__name__}>"


def same_padding(size, kernel_size, stride, dilation):
    """(before, after) that "same" padding adds to a spatial axis of `size`.

    TensorFlow's rule: the output has ceil(size / stride) positions; the odd
    padding element goes after. `size` is an int, or a scalar tensor when
    the axis is not known until run time.
    """
    effective = (kernel_size - 1) * dilation + 1
    outputs = (size + stride - 1) // stride
    needed = (outputs - 1) * stride + effective - size
    total = max(needed, 0) if isinstance(size, int) else ops.maximum(needed, 0)
    return total // 2, total - total // 2


class _PadValuesMixin:
    """`pad_values`: "same" padding with that value in place of zeros (Larq's semantics).

    The (quantized) input is padded as "same" padding would pad it, with
    `pad_values`, and the Keras parent convolves it with "valid" padding.
    A binarized input padded with 1.0 stays +-1 everywhere.
    """

    def __init__(self, *args, pad_values=0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.pad_values = pad_values
        if self.padding == "causal" and pad_values != 0:
            raise ValueError(f"Layer {self.name!r}: causal padding cannot pad with "
                             f"pad_values={pad_values}; use padding='same' or pad_values=0.")

    def call(self, inputs):
        if self.padding != "same" or self.pad_values == 0:
            return super().call(inputs)
        first = 1 if self.data_format == "channels_last" else 2
        dynamic = ops.shape(inputs)
        spatial = [
            same_padding(inputs.shape[axis] if inputs.shape[axis] is not None
                          else dynamic[axis], k, s, d)
            for axis, k, s, d in zip(range(first, first + self.rank), self.kernel_size,
                                     self.strides, self.dilation_rate)
        ]
        pads = [(0, 0), *spatial, (0, 0)] if first == 1 else [(0, 0), (0, 0), *spatial]
        inputs = ops.pad(inputs, pads, constant_values=self.pad_values)
        object.__setattr__(self, "padding", "valid")  # as for the kernel: not tracked state
        try:
            return super().call(inputs)
        finally:
            object.__setattr__(self, "padding", "same")

    def get_config(self):
        return {**super().get_config(), "pad_values": self.pad_values}


class _DenseProduct:
    """Dense's call, its matmul by `kbnn.exact_product` when the operands are integers."""

    def call(self, inputs, training=None):
        if not self.integer_operands():
            return super().call(inputs)
        forward = None
        if self.compute == "bfloat16":
            forward = functools.partial(exact_product.matmul, compute="bfloat16",
                                        signs=self.sign_operands())
        x = exact_product.integer_product(ops.matmul, inputs, self.kernel, forward)
        if self.bias is not None:
            x = ops.add(x, self.bias)
        if self.activation is not None:
            x = self.activation(x)
        return x


@keras.saving.register_keras_serializable(package="kbnn")
class QuantDense(_QuantizerMixin, _DenseProduct, keras.layers.Dense):
    """`keras.layers.Dense` with quantized input and kernel.

    >>> layer = kbnn.layers.QuantDense(3, kernel_quantizer="ste_sign")

    Args:
        units, ...: every argument of `keras.layers.Dense`, positional ones in
            its order (`QuantDense(10, "relu")`).
        input_quantizer: quantizer applied to the input (name, dict, object);
            keyword-only, like the other quantizer arguments.
        kernel_quantizer: quantizer applied to the kernel. With LoRA enabled
            (`lora_rank`), the low-rank update is added to the quantized
            kernel: a float adapter on quantized weights.
        kernel_constraint: also accepts "weight_clip".
        compute: "float32" or "bfloat16": the precision of the forward
            product where input and kernel are binary (exact either way).
    """


class _QuantConv(_QuantizerMixin, _PadValuesMixin):
    """A convolution with quantized input and kernel(s), and `pad_values`."""

    def _bfloat16_kernel(self):
        # Where `compute="bfloat16"` has an exact kernel: `exact_product.conv2d`.
        return self.rank == 2 and self.groups == 1 and self.data_format == "channels_last"

    def convolution_op(self, inputs, kernel):
        # The hook of Conv1D/2D/3D's call (depthwise and separable have none).
        if not self.integer_operands():
            return super().convolution_op(inputs, kernel)
        # Keras's convolution_op, with the padding of this call bound: the
        # gradient runs after `_PadValuesMixin` has restored "same".
        product = functools.partial(
            ops.conv, strides=list(self.strides), padding=self.padding,
            dilation_rate=self.dilation_rate, data_format=self.data_format)
        forward = None
        if self.compute == "bfloat16" and self._bfloat16_kernel():
            forward = functools.partial(
                exact_product.conv2d, strides=self.strides, padding=self.padding.upper(),
                dilations=self.dilation_rate, compute="bfloat16", signs=self.sign_operands())
        return exact_product.integer_product(product, inputs, kernel, forward)


@keras.saving.register_keras_serializable(package="kbnn")
class QuantConv1D(_QuantConv, keras.layers.Conv1D):
    """`keras.layers.Conv1D` with quantized input and kernel; arguments as `QuantConv2D`'s."""


@keras.saving.register_keras_serializable(package="kbnn")
class QuantConv2D(_QuantConv, keras.layers.Conv2D):
    """`keras.layers.Conv2D` with quantized input and kernel, and `pad_values`.

    >>> layer = kbnn.layers.QuantConv2D(8, 3, input_quantizer="ste_sign",
    ...                                 kernel_quantizer="ste_sign", padding="same",
    ...                                 pad_values=1.0)

    `pad_values` (keyword-only, default 0.0) is the value "same" padding pads
    the quantized input with. With 0.0 the zeros padded around a binarized
    input are not +-1 (BinaryNet-style models accept this, as Larq does by
    default); 1.0 keeps every input of a binary convolution at +-1. (In Larq
    it is also the fifth positional argument; here positions are Keras's.)
    """


@keras.saving.register_keras_serializable(package="kbnn")
class QuantConv3D(_QuantConv, keras.layers.Conv3D):
    """`keras.layers.Conv3D` with quantized input and kernel; arguments as `QuantConv2D`'s."""


@keras.saving.register_keras_serializable(package="kbnn")
class QuantDepthwiseConv2D(_QuantConv, keras.layers.DepthwiseConv2D):
    """`keras.layers.DepthwiseConv2D` with quantized input and depthwise kernel.

    >>> layer = kbnn.layers.QuantDepthwiseConv2D(3, input_quantizer="ste_sign",
    ...                                          depthwise_quantizer="ste_sign")

    The kernel quantizer is named `depthwise_quantizer` (and the constraint
    `depthwise_constraint`), as in Larq; `pad_values` is that of `QuantConv2D`.
    """

    _slots = (_Slot("kernel_quantizer", "depthwise_quantizer", "depthwise_constraint", "kernel"),)

    @property
    def depthwise_quantizer(self):
        return self.kernel_quantizer


class _QuantSeparableConv(_QuantConv):
    """A separable convolution: quantized input, depthwise and pointwise kernels, `pad_values`."""

    _slots = (
        _Slot("depthwise_quantizer", "depthwise_quantizer", "depthwise_constraint",
              "depthwise_kernel"),
        _Slot("pointwise_quantizer", "pointwise_quantizer", "pointwise_constraint",
              "pointwise_kernel"),
    )


@keras.saving.register_keras_serializable(package="kbnn")
class QuantSeparableConv1D(_QuantSeparableConv, keras.layers.SeparableConv1D):
    """`keras.layers.SeparableConv1D`, quantized; arguments as `QuantSeparableConv2D`'s."""


@keras.saving.register_keras_serializable(package="kbnn")
class QuantSeparableConv2D(_QuantSeparableConv, keras.layers.SeparableConv2D):
    """`keras.layers.SeparableConv2D` with quantized input and kernels.

    >>> layer = kbnn.layers.QuantSeparableConv2D(
    ...     8, 3, input_quantizer="ste_sign", depthwise_quantizer="ste_sign",
    ...     pointwise_quantizer="ste_sign", padding="same", pad_values=1.0)

    The quantizers are `depthwise_quantizer` and `pointwise_quantizer` (with
    `depthwise_constraint` and `pointwise_constraint`), as in Larq;
    `pad_values` is that of `QuantConv2D`.
    """


class _QuantConvTranspose(_QuantizerMixin):
    """A transposed convolution with quantized input and kernel."""

    _slots = (_KERNEL._replace(variable="kernel"),)


@keras.saving.register_keras_serializable(package="kbnn")
class QuantConv2DTranspose(_QuantConvTranspose, keras.layers.Conv2DTranspose):
    """`keras.layers.Conv2DTranspose` with quantized input and kernel (no `pad_values`: Larq's).

    >>> layer = kbnn.layers.QuantConv2DTranspose(4, 3, strides=2, kernel_quantizer="ste_sign")
    """


@keras.saving.register_keras_serializable(package="kbnn")
class QuantConv3DTranspose(_QuantConvTranspose, keras.layers.Conv3DTranspose):
    """`keras.layers.Conv3DTranspose`, quantized; arguments as `QuantConv2DTranspose`'s."""


# What `set_compute` (and kbnn.train's --precision) takes: a layer's `compute`, or
# "auto", which picks one per layer (`auto_compute`).
PRECISIONS = (*exact_product.COMPUTES, "auto")


def set_compute(model, compute):
    """Set `compute` of every kbnn layer of `model` (nested models too); returns how many.

    >>> model = kbnn.zoo.bnn_mlp((64,))
    >>> kbnn.layers.set_compute(model, "bfloat16")
    2

    `compute` is "float32", "bfloat16" or "auto": each layer gets
    `auto_compute(layer)`, bfloat16 where it is measured faster (binary 2D
    convolutions on a CPU with bfloat16 instructions), float32 elsewhere. The
    results are bit-identical whichever it picks. Set it before the model is
    compiled and trained: a traced training step keeps the compute it was
    traced with.
    """
    if compute not in PRECISIONS:
        raise ValueError(f"Unknown compute {compute!r}; use one of: {', '.join(PRECISIONS)}.")
    count = 0
    for layer in model.layers:
        if isinstance(layer, _QuantizerMixin):
            layer.compute = auto_compute(layer) if compute == "auto" else compute
            count += 1
        elif hasattr(layer, "layers"):
            count += set_compute(layer, compute)
    return count


def auto_compute(layer):
    """The `compute` that `set_compute(model, "auto")` gives a kbnn layer.

    >>> conv = kbnn.layers.QuantConv2D(96, 3, input_quantizer="ste_sign",
    ...                                kernel_quantizer="ste_sign")
    >>> kbnn.layers.auto_compute(conv) == ("bfloat16" if kbnn.exact_product.fast_bfloat16()
    ...                                    else "float32")
    True
    >>> kbnn.layers.auto_compute(kbnn.layers.QuantDense(10, input_quantizer="ste_sign",
    ...                                                 kernel_quantizer="ste_sign"))
    'float32'

    bfloat16 for a 2D convolution whose input and kernel are +-1 (its groups
    hold up to 512 terms, `kbnn.exact_product.conv2d_groups`), where the CPU
    computes bfloat16 products natively (`kbnn.exact_product.fast_bfloat16`):
    there a 14x14, 96-channel convolution took 0.74-0.90 of float32's time, and
    training the released CNN took 0.87-0.91 of its float twin's CPU time
    against 0.91-0.95 with float32 convolutions (one interleaved run; in
    `benchmarks/vs_larq.py`'s fresh processes both were 0.94). float32 for
    everything else: a dense layer's chunked bfloat16 product cost more than it
    saved (784-1024-10: 1.46x).
    """
    conv = isinstance(layer, _QuantConv) and layer._bfloat16_kernel()
    if (conv and layer.sign_operands() and exact_product.fast_bfloat16()
            and exact_product.kernels_round_only_their_total()):
        return "bfloat16"
    return "float32"


@keras.saving.register_keras_serializable(package="kbnn")
class ChannelSlice(keras.layers.Layer):
    """Channels `start` to `stop` (exclusive) of a channels-last tensor.

    >>> import numpy as np
    >>> ChannelSlice(1, 3)(np.arange(4.0).reshape(1, 4)).numpy()
    array([[1., 2.]], dtype=float32)

    MeliusNet (`kbnn.zoo.meliusnet22`) splits its features with it; the
    exporter writes it as a builtin STRIDED_SLICE.
    """

    def __init__(self, start, stop, **kwargs):
        super().__init__(**kwargs)
        self.start, self.stop = int(start), int(stop)

    def call(self, inputs):
        return inputs[..., self.start:self.stop]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.stop - self.start,)

    def get_config(self):
        return {**super().get_config(), "start": self.start, "stop": self.stop}
