"""Sign-family quantizers with straight-through gradients.

Each quantizer is a plain function built with `tf.custom_gradient`, plus a
thin serializable Keras layer around it that a `QuantDense` or `QuantConv2D`
takes by string, by config dict or as an object:

>>> import numpy as np, kbnn
>>> x = np.array([-2.0, -0.5, 0.0, 0.5, 2.0], "float32")
>>> kbnn.quantizers.ste_sign(x).numpy()              # the plain function
array([-1., -1.,  1.,  1.,  1.], dtype=float32)
>>> q = kbnn.quantizers.get("ste_sign")              # by string: defaults
>>> q = kbnn.quantizers.SteSign(clip_value=0.5)      # as an object: arguments
>>> layer = kbnn.layers.QuantDense(4, kernel_quantizer=q, input_quantizer="ste_sign")

A string gives the quantizer with its default arguments; an object lets you
set them (`clip_value`, `beta`, `seed`). Both serialize into `.keras` files.

Conventions that live here and nowhere else:

* sign(0) = +1 (`sign`); every binary output is exactly +1.0 or -1.0.
* the straight-through gradient passes `dy` where |x| <= clip_value and 0
  elsewhere (in float32, `dy * 0`: NaN where `dy` itself is inf or NaN);
  `clip_value=None` passes it everywhere.
* `is_binary(q)` decides which quantizers produce two levels (1-bit values);
  the summary and the exporter both ask it.
"""

import numbers

import keras
import tensorflow as tf

from kbnn.larq_config import from_larq_dict

__all__ = [
    "sign",
    "ste_sign",
    "stochastic_sign",
    "approx_sign",
    "swish_sign",
    "magnitude_aware_sign",
    "ste_heaviside",
    "Quantizer",
    "SteSign",
    "StochasticSign",
    "ApproxSign",
    "SwishSign",
    "MagnitudeAwareSign",
    "SteHeaviside",
    "get",
    "serialize",
    "is_binary",
    "BinaryQuantizer",
    "hard_sigmoid",
]


def sign(x):
    """Sign with sign(0) = +1: the one sign convention of kbnn.

    >>> kbnn.quantizers.sign([-0.0, 0.0, -3.0]).numpy()
    array([ 1.,  1., -1.], dtype=float32)
    """
    x = tf.convert_to_tensor(x)
    return tf.where(x >= 0, tf.constant(1, x.dtype), tf.constant(-1, x.dtype))


# Plain TensorFlow ops, not XLA-compiled kernels: XLA saved little time on
# these element-wise ops and made the training process grow epoch by epoch.
def _clipped_gradient(x, dy, clip_value):
    """dy where |x| <= clip_value (inclusive), else 0."""
    if clip_value is None:
        return dy
    if (x.dtype == tf.float32 and dy.dtype == tf.float32
            and isinstance(clip_value, numbers.Real) and 0 < clip_value < 1e38):
        # One fused kernel (one pass over x) in place of abs, compare and
        # select. FakeQuant's gradient passes dy where nudged_min <= x <= nudged_max; with 2 narrow-range bits over
        # [-c, c] the scale is c and the zero point exactly 2, so the nudged
        # range is exactly [-c, c]. Masked entries are dy * 0: a signed zero,
        # or NaN where dy is inf or NaN (tf.where would give 0 there).
        return tf.raw_ops.FakeQuantWithMinMaxArgsGradient(
            gradients=dy, inputs=x, min=-float(clip_value), max=float(clip_value),
            num_bits=2, narrow_range=True)
    return tf.where(tf.abs(x) <= tf.constant(clip_value, x.dtype), dy, tf.zeros_like(dy))


def ste_sign(x, clip_value=1.0):
    """Deterministic binarizer: sign(x) forward, straight-through backward.

    The gradient is dy where |x| <= clip_value, else 0 (Courbariaux et al.,
    BinaryNet).

    >>> kbnn.quantizers.ste_sign([-0.3, 0.0, 2.0]).numpy()
    array([-1.,  1.,  1.], dtype=float32)
    """

    @tf.custom_gradient
    def _ste_sign(x):
        return sign(x), lambda dy: _clipped_gradient(x, dy, clip_value)

    return _ste_sign(tf.convert_to_tensor(x))


def hard_sigmoid(x):
    """clip((x + 1) / 2, 0, 1): the probability of +1 in `stochastic_sign`."""
    return tf.clip_by_value((x + 1.0) / 2.0, 0.0, 1.0)


def stochastic_sign(x, seed, clip_value=1.0):
    """Stochastic binarizer: +1 with probability hard_sigmoid(x), else -1.

    `seed` is a Keras `SeedGenerator`, an int, or a shape-[2] int tensor for
    a stateless draw; the same seed gives the same draws. Backward it is the
    straight-through gradient of `ste_sign`.

    >>> kbnn.quantizers.stochastic_sign([-5.0, 5.0], seed=0).numpy()
    array([-1.,  1.], dtype=float32)
    """
    x = tf.convert_to_tensor(x)
    noise = keras.random.uniform(tf.shape(x), dtype=x.dtype, seed=seed)

    @tf.custom_gradient
    def _stochastic_sign(x):
        # u < p is true with probability p for u ~ U[0, 1).
        out = tf.where(noise < hard_sigmoid(x), tf.constant(1, x.dtype),
                       tf.constant(-1, x.dtype))
        return out, lambda dy: _clipped_gradient(x, dy, clip_value)

    return _stochastic_sign(x)


def approx_sign(x):
    """Sign with the Bi-Real Net gradient: dy * (2 - 2|x|) for |x| <= 1, else 0.

    >>> kbnn.quantizers.approx_sign([0.0, -0.7]).numpy()
    array([ 1., -1.], dtype=float32)
    """

    def grad(x, dy):
        abs_x = tf.abs(x)
        return tf.where(abs_x <= 1.0, (2.0 - 2.0 * abs_x) * dy, tf.zeros_like(dy))

    @tf.custom_gradient
    def _approx_sign(x):
        return sign(x), lambda dy: grad(x, dy)

    return _approx_sign(tf.convert_to_tensor(x))


def swish_sign(x, beta=5.0):
    """Sign with the SignSwish gradient of BNN+ (Darabi et al.).

    The gradient is dy * beta * (2 - beta x tanh(beta x / 2)) / (1 + cosh(beta x)).

    >>> kbnn.quantizers.swish_sign([0.1, -0.1], beta=5.0).numpy()
    array([ 1., -1.], dtype=float32)
    """

    def grad(x, dy):
        bx = beta * x
        return dy * beta * (2.0 - bx * tf.tanh(bx / 2.0)) / (1.0 + tf.cosh(bx))

    @tf.custom_gradient
    def _swish_sign(x):
        return sign(x), lambda dy: grad(x, dy)

    return _swish_sign(tf.convert_to_tensor(x))


def _channel_scale(x):
    """The mean |x| over all axes but the last: one scale per output channel."""
    return tf.reduce_mean(tf.abs(x), axis=list(range(len(x.shape) - 1)))


def magnitude_aware_sign(x, clip_value=1.0):
    """Sign scaled by the mean |x| of each output channel (Bi-Real Net weights).

    The scale is the mean of |x| over all axes but the last (for a dense or
    conv kernel: per output channel; for a depthwise kernel [kh, kw, C, M]:
    per depth multiplier, as in Larq) and is not differentiated.

    >>> kbnn.quantizers.magnitude_aware_sign([[1.0, -2.0], [-3.0, 0.0]]).numpy()
    array([[ 2.,  -1.],
           [-2.,   1.]], dtype=float32)
    """
    x = tf.convert_to_tensor(x)
    return tf.stop_gradient(_channel_scale(x)) * ste_sign(x, clip_value=clip_value)


def ste_heaviside(x, clip_value=1.0):
    """Binarizer to {0, 1}: 1 where x > 0, else 0; straight-through backward.

    >>> kbnn.quantizers.ste_heaviside([-1.0, 0.0, 0.5]).numpy()
    array([0., 0., 1.], dtype=float32)
    """

    @tf.custom_gradient
    def _ste_heaviside(x):
        out = tf.where(x > 0, tf.ones_like(x), tf.zeros_like(x))
        return out, lambda dy: _clipped_gradient(x, dy, clip_value)

    return _ste_heaviside(tf.convert_to_tensor(x))


class Quantizer(keras.layers.Layer):
    """Base class of the serializable quantizers: a Keras layer around a function.

    Subclasses implement `call`. As layers they are tracked by the quantized layer that holds them
    (seed state included) and receive its `training` flag.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)

    def compute_output_shape(self, input_shape):
        return input_shape


class BinaryQuantizer(Quantizer):
    """Base class of quantizers with two output levels per output channel.

    `levels(kernel)` gives those levels, so the exporter can store each
    quantized weight as one bit (1 for `high`, 0 for `low`).
    """

    def levels(self, kernel):
        """(low, high) per output channel (last axis) of `kernel`: -1 and +1."""
        ones = tf.ones([kernel.shape[-1]])
        return -ones, ones


class _SignQuantizer(BinaryQuantizer):
    """Shared config handling of the binary quantizers with a clip value."""

    def __init__(self, clip_value=1.0, **kwargs):
        super().__init__(**kwargs)
        self.clip_value = clip_value

    def get_config(self):
        return {**super().get_config(), "clip_value": self.clip_value}


@keras.saving.register_keras_serializable(package="kbnn")
class SteSign(_SignQuantizer):
    """`ste_sign` as a serializable quantizer.

    >>> kbnn.quantizers.SteSign(clip_value=None)(np.array([-1.0, 0.0])).numpy()
    array([-1.,  1.], dtype=float32)
    """

    def call(self, inputs):
        return ste_sign(inputs, clip_value=self.clip_value)


@keras.saving.register_keras_serializable(package="kbnn")
class StochasticSign(_SignQuantizer):
    """`stochastic_sign` while training, `ste_sign` otherwise.

    Draws come from a Keras `SeedGenerator` seeded with `seed`, so two runs
    with the same seed draw the same values; at inference (`training` false
    or unset: `predict`, `evaluate`, export) it is the deterministic sign.

    >>> q = kbnn.quantizers.StochasticSign(seed=1)
    >>> q(np.array([0.0, 0.3], "float32"), training=False).numpy()
    array([1., 1.], dtype=float32)
    """

    def __init__(self, clip_value=1.0, seed=None, **kwargs):
        super().__init__(clip_value=clip_value, **kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if training:
            return stochastic_sign(
                inputs, seed=self.seed_generator, clip_value=self.clip_value
            )
        return ste_sign(inputs, clip_value=self.clip_value)

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable(package="kbnn")
class ApproxSign(BinaryQuantizer):
    """`approx_sign` as a serializable quantizer."""

    def call(self, inputs):
        return approx_sign(inputs)


@keras.saving.register_keras_serializable(package="kbnn")
class SwishSign(BinaryQuantizer):
    """`swish_sign` as a serializable quantizer, with its `beta`."""

    def __init__(self, beta=5.0, **kwargs):
        super().__init__(**kwargs)
        self.beta = beta

    def call(self, inputs):
        return swish_sign(inputs, beta=self.beta)

    def get_config(self):
        return {**super().get_config(), "beta": self.beta}


@keras.saving.register_keras_serializable(package="kbnn")
class MagnitudeAwareSign(_SignQuantizer):
    """`magnitude_aware_sign` as a serializable quantizer (for kernels)."""

    def call(self, inputs):
        return magnitude_aware_sign(inputs, clip_value=self.clip_value)

    def levels(self, kernel):
        scale = _channel_scale(tf.convert_to_tensor(kernel))
        return -scale, scale


@keras.saving.register_keras_serializable(package="kbnn")
class SteHeaviside(_SignQuantizer):
    """`ste_heaviside` as a serializable quantizer (values 0 and 1)."""

    def call(self, inputs):
        return ste_heaviside(inputs, clip_value=self.clip_value)

    def levels(self, kernel):
        ones = tf.ones([kernel.shape[-1]])
        return 0.0 * ones, ones


_BY_NAME = {
    "ste_sign": SteSign,
    "stochastic_sign": StochasticSign,
    "approx_sign": ApproxSign,
    "swish_sign": SwishSign,
    "magnitude_aware_sign": MagnitudeAwareSign,
    "ste_heaviside": SteHeaviside,
}
_BY_FUNCTION = {globals()[name]: cls for name, cls in _BY_NAME.items()}
_BY_CLASS_NAME = {cls.__name__: cls for cls in _BY_NAME.values()}


def get(identifier):
    """The quantizer named by a string, config dict, object or callable.

    >>> type(kbnn.quantizers.get("approx_sign")).__name__
    'ApproxSign'
    >>> kbnn.quantizers.get(None) is None
    True

    Strings are the snake-case names ("ste_sign", "stochastic_sign",
    "approx_sign", "swish_sign", "magnitude_aware_sign", "ste_heaviside") or
    the class names; dicts come from `serialize` (or are Larq-style
    `{"class_name": "SteSign", "config": {...}}`); one of this module's plain
    functions becomes its class with default arguments (so it serializes);
    any other callable is used as it is.
    """
    if identifier is None or isinstance(identifier, Quantizer):
        return identifier
    if isinstance(identifier, str):
        cls = _BY_NAME.get(identifier) or _BY_CLASS_NAME.get(identifier)
        if cls is None:
            raise ValueError(
                f"Unknown quantizer {identifier!r}; known: {', '.join(_BY_NAME)}."
            )
        return cls()
    if isinstance(identifier, dict):
        larq = from_larq_dict(identifier, _BY_CLASS_NAME)
        return larq if larq is not None else keras.saving.deserialize_keras_object(identifier)
    if callable(identifier):
        cls = next((c for f, c in _BY_FUNCTION.items() if f is identifier), None)
        return identifier if cls is None else cls()
    raise ValueError(
        f"Cannot interpret {identifier!r} as a quantizer: pass a name "
        f"({', '.join(_BY_NAME)}), a config dict, a Quantizer or a callable."
    )


def serialize(quantizer):
    """The config dict of a quantizer (None stays None); `get` reverses it."""
    return keras.saving.serialize_keras_object(quantizer)


def is_binary(quantizer):
    """Whether `quantizer` produces 1-bit values (two levels per channel).

    The one predicate that decides which weights count as 1-bit in
    `kbnn.summary` and get packed by the exporter.

    >>> kbnn.quantizers.is_binary(kbnn.quantizers.get("ste_sign"))
    True
    >>> kbnn.quantizers.is_binary(None)
    False
    """
    return isinstance(quantizer, BinaryQuantizer)
