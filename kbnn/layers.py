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
Without quantizers a layer computes exactly what its Keras parent does.
"""

import keras
from keras import ops

from kbnn import constraints as kbnn_constraints
from kbnn import quantizers

__all__ = ["QuantDense", "QuantConv2D", "QuantDepthwiseConv2D"]


class _QuantizerMixin:
    """Quantizer attributes, their config, and the quantized forward inputs."""

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

    def _quantizer_config(self):
        return {
            "input_quantizer": quantizers.serialize(self.input_quantizer),
            self._kernel_quantizer_arg: quantizers.serialize(self.kernel_quantizer),
        }


def _conv_bias(layer, outputs):
    if layer.data_format == "channels_last":
        shape = (1,) * (layer.rank + 1) + (-1,)
    else:
        shape = (1, -1) + (1,) * layer.rank
    return ops.add(outputs, ops.reshape(layer.bias, shape))


@keras.saving.register_keras_serializable(package="kbnn")
class QuantDense(_QuantizerMixin, keras.layers.Dense):
    """`keras.layers.Dense` with quantized input and kernel.

    >>> layer = kbnn.layers.QuantDense(3, kernel_quantizer="ste_sign")

    Args:
        units, ...: every argument of `keras.layers.Dense`, positional ones in
            its order (`QuantDense(10, "relu")`).
        input_quantizer: quantizer applied to the input (name, dict, object);
            keyword-only, like the other quantizer arguments.
        kernel_quantizer: quantizer applied to the kernel.
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

    def call(self, inputs, training=None):
        if not self.quantized:
            return super().call(inputs, training=training)
        x = ops.matmul(self.quantize_input(inputs, training), self.quantize_kernel(training))
        if self.bias is not None:
            x = ops.add(x, self.bias)
        if self.activation is not None:
            x = self.activation(x)
        return x

    def get_config(self):
        return {**super().get_config(), **self._quantizer_config()}


@keras.saving.register_keras_serializable(package="kbnn")
class QuantConv2D(_QuantizerMixin, keras.layers.Conv2D):
    """`keras.layers.Conv2D` with quantized input and kernel.

    >>> layer = kbnn.layers.QuantConv2D(8, 3, input_quantizer="ste_sign",
    ...                                 kernel_quantizer="ste_sign", padding="same")

    Note: with "same" padding the zeros padded around a binarized input are
    not +-1; BinaryNet-style models accept this, as Larq does by default.
    """

    def __init__(
        self, filters, kernel_size, *args, input_quantizer=None, kernel_quantizer=None,
        kernel_constraint=None, **kwargs,
    ):
        super().__init__(
            filters, kernel_size, *args,
            kernel_constraint=kbnn_constraints.get(kernel_constraint), **kwargs,
        )
        self._set_quantizers(input_quantizer, kernel_quantizer)

    def call(self, inputs, training=None):
        if not self.quantized:
            return super().call(inputs)
        outputs = self.convolution_op(self.quantize_input(inputs, training),
                                      self.quantize_kernel(training))
        if self.use_bias:
            outputs = _conv_bias(self, outputs)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def get_config(self):
        return {**super().get_config(), **self._quantizer_config()}


@keras.saving.register_keras_serializable(package="kbnn")
class QuantDepthwiseConv2D(_QuantizerMixin, keras.layers.DepthwiseConv2D):
    """`keras.layers.DepthwiseConv2D` with quantized input and depthwise kernel.

    >>> layer = kbnn.layers.QuantDepthwiseConv2D(3, input_quantizer="ste_sign",
    ...                                          depthwise_quantizer="ste_sign")

    The kernel quantizer is named `depthwise_quantizer` (and the constraint
    `depthwise_constraint`), as in Larq.
    """

    _kernel_quantizer_arg = "depthwise_quantizer"

    def __init__(
        self, kernel_size, *args, input_quantizer=None, depthwise_quantizer=None,
        depthwise_constraint=None, **kwargs,
    ):
        super().__init__(
            kernel_size, *args,
            depthwise_constraint=kbnn_constraints.get(depthwise_constraint), **kwargs,
        )
        self._set_quantizers(input_quantizer, depthwise_quantizer)

    @property
    def depthwise_quantizer(self):
        return self.kernel_quantizer

    def call(self, inputs, training=None):
        if not self.quantized:
            return super().call(inputs)
        outputs = ops.depthwise_conv(
            self.quantize_input(inputs, training),
            self.quantize_kernel(training),
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )
        if self.use_bias:
            outputs = _conv_bias(self, outputs)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def get_config(self):
        return {**super().get_config(), **self._quantizer_config()}
