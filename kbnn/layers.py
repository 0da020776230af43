"""Quantized Keras layers: `QuantDense`, `QuantConv2D`, `QuantDepthwiseConv2D`.

Each subclasses its Keras layer, takes every argument of it (positional ones
in Keras's order), and adds keyword-only quantizers for the input and the
kernel. A binarized layer (BinaryNet style):

>>> import numpy as np, kbnn
>>> layer = kbnn.layers.QuantDense(
...     16, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
...     kernel_constraint="weight_clip", use_bias=False)
>>> tuple(layer(np.random.randn(2, 8).astype("float32")).shape)
(2, 16)

The quantizers apply in `call`, on every forward pass: the layer keeps real
(latent) weights for the optimizer and computes with their quantized values.
The computing itself is the Keras parent's own `call`, so every option of the
parent (activation, bias, strides, dilation, data format, ...) works as it
does there, and without quantizers a layer computes exactly what its parent
does.

Loading a `.keras` file that holds these layers needs `import kbnn` first:
Keras 3 finds a custom class only in its registry (filled when kbnn is
imported) and imports no module a file names unless it belongs to Keras.
"""

import keras
import numpy as np
from keras import ops

from kbnn import constraints as kbnn_constraints
from kbnn import context, quantizers

__all__ = ["QuantDense", "QuantConv2D", "QuantDepthwiseConv2D", "QuantizedKernel"]


class _QuantizerMixin:
    """Quantizes a Keras layer's input and kernel, then hands off to the layer's own `call`.

    The hook is `_kernel_attribute`: the attribute in which the Keras parent
    keeps its kernel variable and reads it in `call` (`_kernel` behind
    Dense's and Conv's `kernel` property; `kernel` itself in DepthwiseConv).
    For the duration of the parent's `call` that attribute holds the
    quantized kernel, as Larq's quantized variables read quantized inside
    the layer's call.
    """

    _kernel_attribute = "_kernel"
    _kernel_quantizer_arg = "kernel_quantizer"

    def _set_quantizers(self, input_quantizer, kernel_quantizer):
        self.input_quantizer = quantizers.get(input_quantizer)
        self.kernel_quantizer = quantizers.get(kernel_quantizer)

    @property
    def quantized(self):
        return self.input_quantizer is not None or self.kernel_quantizer is not None

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
        if self.kernel_quantizer is None:
            return super().call(inputs)
        latent = getattr(self, self._kernel_attribute)
        # object.__setattr__ bypasses Keras's attribute tracking: the latent
        # variable stays the tracked weight, the quantized tensor is never one.
        object.__setattr__(self, self._kernel_attribute,
                           self._quantize(self.kernel_quantizer, latent, training))
        try:
            return super().call(inputs)
        finally:
            object.__setattr__(self, self._kernel_attribute, latent)

    @property
    def weights(self):
        weights = super().weights
        if self.kernel_quantizer is None or not context.should_quantize():
            return weights
        latent = getattr(self, self._kernel_attribute)
        return [QuantizedKernel(self, w) if w is latent else w for w in weights]

    def get_config(self):
        return {
            **super().get_config(),
            "input_quantizer": quantizers.serialize(self.input_quantizer),
            self._kernel_quantizer_arg: quantizers.serialize(self.kernel_quantizer),
        }


class QuantizedKernel:
    """A layer's kernel read through its quantizer: what `weights` lists in `quantized_scope(True)`.

    Reading (`numpy()`, `value`, `np.asarray`) gives the quantized kernel in
    inference mode; `assign` writes the latent variable (`latent`), so
    `set_weights` inside the scope works as outside it.
    """

    def __init__(self, layer, latent):
        self._layer = layer
        self.latent = latent

    shape = property(lambda self: self.latent.shape)
    dtype = property(lambda self: self.latent.dtype)
    name = property(lambda self: self.latent.name)
    path = property(lambda self: self.latent.path)
    trainable = property(lambda self: self.latent.trainable)

    @property
    def value(self):
        return self._layer._quantize(self._layer.kernel_quantizer, self.latent, training=False)

    def numpy(self):
        return ops.convert_to_numpy(self.value)

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.numpy(), dtype=dtype)

    def assign(self, value):
        return self.latent.assign(value)

    def __repr__(self):
        return f"<QuantizedKernel of {self.path} through {type(self._layer.kernel_quantizer).__name__}>"


def _same_padding(size, kernel_size, stride, dilation):
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

    def _set_pad_values(self, pad_values):
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
            _same_padding(inputs.shape[axis] if inputs.shape[axis] is not None
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


@keras.saving.register_keras_serializable(package="kbnn")
class QuantDense(_QuantizerMixin, keras.layers.Dense):
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
    """

    def __init__(
        self, units, *args, input_quantizer=None, kernel_quantizer=None,
        kernel_constraint=None, **kwargs,
    ):
        super().__init__(
            units, *args, kernel_constraint=kbnn_constraints.get(kernel_constraint), **kwargs
        )
        self._set_quantizers(input_quantizer, kernel_quantizer)


@keras.saving.register_keras_serializable(package="kbnn")
class QuantConv2D(_QuantizerMixin, _PadValuesMixin, keras.layers.Conv2D):
    """`keras.layers.Conv2D` with quantized input and kernel.

    >>> layer = kbnn.layers.QuantConv2D(8, 3, input_quantizer="ste_sign",
    ...                                 kernel_quantizer="ste_sign", padding="same",
    ...                                 pad_values=1.0)

    `pad_values` (keyword-only, default 0.0): the value "same" padding pads
    the quantized input with. With 0.0 the zeros padded around a binarized
    input are not +-1 (BinaryNet-style models accept this, as Larq does by
    default); 1.0 keeps every input of the binary convolution at +-1.
    """

    def __init__(
        self, filters, kernel_size, *args, input_quantizer=None, kernel_quantizer=None,
        kernel_constraint=None, pad_values=0.0, **kwargs,
    ):
        super().__init__(
            filters, kernel_size, *args,
            kernel_constraint=kbnn_constraints.get(kernel_constraint), **kwargs,
        )
        self._set_quantizers(input_quantizer, kernel_quantizer)
        self._set_pad_values(pad_values)


@keras.saving.register_keras_serializable(package="kbnn")
class QuantDepthwiseConv2D(_QuantizerMixin, _PadValuesMixin, keras.layers.DepthwiseConv2D):
    """`keras.layers.DepthwiseConv2D` with quantized input and depthwise kernel.

    >>> layer = kbnn.layers.QuantDepthwiseConv2D(3, input_quantizer="ste_sign",
    ...                                          depthwise_quantizer="ste_sign")

    The kernel quantizer is named `depthwise_quantizer` (and the constraint
    `depthwise_constraint`), as in Larq; `pad_values` is that of `QuantConv2D`.
    """

    _kernel_attribute = "kernel"
    _kernel_quantizer_arg = "depthwise_quantizer"

    def __init__(
        self, kernel_size, *args, input_quantizer=None, depthwise_quantizer=None,
        depthwise_constraint=None, pad_values=0.0, **kwargs,
    ):
        super().__init__(
            kernel_size, *args,
            depthwise_constraint=kbnn_constraints.get(depthwise_constraint), **kwargs,
        )
        self._set_quantizers(input_quantizer, depthwise_quantizer)
        self._set_pad_values(pad_values)

    @property
    def depthwise_quantizer(self):
        return self.kernel_quantizer
