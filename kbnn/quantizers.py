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
  elsewhere (`dy * 0`: NaN where `dy` itself is inf or NaN); `clip_value=None`
  passes it everywhere. The backward pass keeps the mask |x| <= clip_value as
  bool, not `x`.
* heaviside(0) = 0 (`heaviside`): 1 where x > 0, else 0.
* every quantizer has a `precision`, the bits of its output (1 for the
  sign family, 2 for `SteTern`, k_bit for `DoReFa`, None when unknown);
  `is_binary(q)` reads it, and decides which quantizers produce 1-bit values
  for the summary and the exporter.

The names and semantics are Larq's (`SteSign`, `SteTern`, `DoReFa`, `NoOp`,
...), so code written for `larq.quantizers` runs with `kbnn.quantizers`.
"""

import numbers

import keras
import tensorflow as tf

from kbnn import quantizer_ops
from kbnn.larq_config import from_larq_dict
from kbnn.metrics import FlipRatio

__all__ = [
    "sign",
    "ste_sign",
    "stochastic_sign",
    "approx_sign",
    "swish_sign",
    "magnitude_aware_sign",
    "ste_heaviside",
    "ste_tern",
    "dorefa_quantizer",
    "heaviside",
    "Quantizer",
    "SteSign",
    "StochasticSign",
    "ApproxSign",
    "SwishSign",
    "MagnitudeAwareSign",
    "SteHeaviside",
    "SteTern",
    "DoReFa",
    "DoReFaQuantizer",
    "NoOp",
    "NoOpQuantizer",
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


def heaviside(x):
    """Step function with heaviside(0) = 0: 1 where x > 0, else 0.

    >>> kbnn.quantizers.heaviside([-1.0, 0.0, 0.5]).numpy()
    array([0., 0., 1.], dtype=float32)
    """
    x = tf.convert_to_tensor(x)
    return tf.where(x > 0, tf.constant(1, x.dtype), tf.constant(0, x.dtype))


# Plain TensorFlow ops, not XLA-compiled kernels: XLA saved little time on
# these element-wise ops and made the training process grow epoch by epoch.
def _straight_through(x, clip_value, held=False):
    """The straight-through backward pass of a quantizer of `x`: dy where |x| <= clip_value.

    The mask is taken in the forward pass and kept as bool (one byte an
    element), so the backward pass does not hold `x` itself: the float input
    of a binarizer (a batch norm's output) is freed after the forward pass.
    Masked entries are dy * 0: a signed zero, or NaN where dy is inf or NaN.
    `held`: `x` is a variable's value (a latent kernel), kept anyway; then the
    backward pass reads it in one fused op, not four passes for a mask.
    """
    if clip_value is None:
        return lambda dy: dy
    if (held and x.dtype == tf.float32 and isinstance(clip_value, numbers.Real)
            and 0 < clip_value < 1e38):
        # FakeQuant's gradient passes dy where nudged_min <= x <= nudged_max
        # (else dy * 0); with 2 narrow-range bits over [-c, c] the scale is c
        # and the zero point exactly 2, so the nudged range is exactly [-c, c].
        return lambda dy: tf.raw_ops.FakeQuantWithMinMaxArgsGradient(
            gradients=dy, inputs=x, min=-float(clip_value), max=float(clip_value),
            num_bits=2, narrow_range=True)
    keep = tf.abs(x) <= tf.constant(clip_value, x.dtype)

    def grad(dy):
        # After dy: TensorFlow runs an op as soon as its inputs are ready, and
        # a float mask cast in the forward pass would be held until here.
        with tf.control_dependencies([dy]):
            return dy * tf.cast(keep, dy.dtype)

    return grad


def ste_sign(x, clip_value=1.0):
    """Deterministic binarizer: sign(x) forward, straight-through backward.

    The gradient is dy where |x| <= clip_value, else 0 (Courbariaux et al.,
    BinaryNet).

    >>> kbnn.quantizers.ste_sign([-0.3, 0.0, 2.0]).numpy()
    array([-1.,  1.,  1.], dtype=float32)
    """

    held = isinstance(x, (tf.Variable, keras.Variable))

    @tf.custom_gradient
    def _ste_sign(x):
        return sign(x), _straight_through(x, clip_value, held)

    return _ste_sign(tf.convert_to_tensor(x))


def _uses_ops(x, clip_value):
    """Whether a sign quantizer's training call on `x` runs `kbnn.quantizer_ops`."""
    return (quantizer_ops.usable(x)
            and (clip_value is None or isinstance(clip_value, numbers.Real)))


def _ste_sign_with_ops(x, clip_value):
    """`ste_sign` computed with `kbnn.quantizer_ops`: the same values and gradient in
    fewer passes. For training calls only, so saved and exported graphs hold no kbnn op."""
    held = isinstance(x, (tf.Variable, keras.Variable))

    @tf.custom_gradient
    def _ste_sign(x):
        if held or clip_value is None:  # a kernel: its backward reads the variable
            return quantizer_ops.sign(x), _straight_through(x, clip_value, held)
        y, keep = quantizer_ops.sign_and_mask(x, clip_value)
        return y, lambda dy: quantizer_ops.masked_gradient(dy, keep)

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
        return out, _straight_through(x, clip_value)

    return _stochastic_sign(x)


def _stochastic_sign_with_ops(x, seed, clip_value):
    """`stochastic_sign` computed with `kbnn.quantizer_ops` (training calls only)."""
    x = tf.convert_to_tensor(x)
    noise = keras.random.uniform(tf.shape(x), dtype=x.dtype, seed=seed)

    @tf.custom_gradient
    def _stochastic_sign(x):
        y, keep = quantizer_ops.stochastic_sign_and_mask(
            x, noise, float("inf") if clip_value is None else clip_value)
        if clip_value is None:
            return y, lambda dy: dy
        return y, lambda dy: quantizer_ops.masked_gradient(dy, keep)

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
        if x.dtype != tf.float32:
            # In float16, cosh overflows from |beta x| > 11, and dy (loss-scaled
            # under mixed precision) times the numerator overflows: inf / inf.
            # The factor itself is small, so compute it in float32.
            factor = grad(tf.cast(x, tf.float32), tf.ones_like(x, tf.float32))
            return dy * tf.cast(factor, dy.dtype)
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
        return heaviside(x), _straight_through(x, clip_value)

    return _ste_heaviside(tf.convert_to_tensor(x))


def ste_tern(x, threshold_value=0.05, ternary_weight_networks=False, clip_value=1.0):
    """Ternarizer to {-1, 0, +1} with a threshold t; straight-through backward.

    +1 where x >= t, -1 where x <= -t, 0 strictly between (for t > 0; with
    t = 0, x = 0 gives 0). With `ternary_weight_networks`, t is 0.7 times the
    mean |x| of the whole tensor (Li et al., Ternary Weight Networks) instead
    of `threshold_value`. The gradient is that of `ste_sign`.

    >>> kbnn.quantizers.ste_tern([-0.5, -0.05, 0.0, 0.04, 0.05, 2.0]).numpy()
    array([-1., -1.,  0.,  0.,  1.,  1.], dtype=float32)
    """

    @tf.custom_gradient
    def _ste_tern(x):
        if ternary_weight_networks:
            threshold = 0.7 * tf.reduce_mean(tf.abs(x))
        else:
            threshold = tf.constant(threshold_value, x.dtype)
        # +1 above the band, -1 below it, 0 inside (the two signs cancel).
        out = tf.sign(tf.sign(x + threshold) + tf.sign(x - threshold))
        return out, _straight_through(x, clip_value)

    return _ste_tern(tf.convert_to_tensor(x))


def _round_with_identity_gradient(x, levels):
    """round(x * levels) / levels forward (x in [0, 1]), dy backward."""

    @tf.custom_gradient
    def _round(x):
        return tf.round(x * levels) / levels, lambda dy: dy

    return _round(x)


DOREFA_MODES = ("activations", "weights")


def dorefa_quantizer(x, k_bit=2, mode="activations"):
    """DoReFa-Net's k-bit quantizer (Zhou et al.): 2**k_bit evenly spaced levels.

    mode="activations": clip x to [0, 1], round to the levels i / (2**k_bit - 1);
    the gradient is dy inside [0, 1] (the clip's), straight through the rounding.
    mode="weights": tanh(x), scaled by the tensor's max |tanh(x)| (not
    differentiated) into [0, 1], rounded the same way, then mapped to [-1, 1];
    the gradient is that of the tanh and the scaling.

    Rounding is TensorFlow's (half to even).

    >>> x = [-0.5, 0.2, 0.5, 0.9, 3.0]
    >>> (kbnn.quantizers.dorefa_quantizer(x, k_bit=2) * 3).numpy()  # levels 0, 1/3, 2/3, 1
    array([0., 1., 2., 3., 3.], dtype=float32)
    >>> kbnn.quantizers.dorefa_quantizer([-2.0, 0.1, 2.0], k_bit=1, mode="weights").numpy()
    array([-1.,  1.,  1.], dtype=float32)
    """
    if mode not in DOREFA_MODES:
        raise ValueError(f"Unknown DoReFa mode {mode!r}; use 'activations' or 'weights'.")
    x = tf.convert_to_tensor(x)
    levels = tf.constant(2 ** k_bit - 1, x.dtype)
    if mode == "activations":
        return _round_with_identity_gradient(tf.clip_by_value(x, 0.0, 1.0), levels)
    squashed = tf.tanh(x)
    scale = tf.stop_gradient(tf.reduce_max(tf.abs(squashed)))
    unit = tf.math.divide_no_nan(squashed, 2.0 * scale) + 0.5  # all-zero x stays 0
    return 2.0 * _round_with_identity_gradient(unit, levels) - 1.0


class Quantizer(keras.layers.Layer):
    """Base class of the serializable quantizers: a Keras layer around a function.

    Subclasses implement `call`. As layers they are tracked by the quantized layer that holds them
    (seed state included) and receive its `training` flag.

    `precision` is the number of bits of the output (None: unknown, e.g. a
    float); 1 makes the quantizer binary (`is_binary`), and `kbnn.summary`
    counts the weights it quantizes at that many bits.

    `metrics=["flip_ratio"]` adds a `kbnn.metrics.FlipRatio` of the output,
    updated at each training call (Larq updates it at every call), which
    `fit` logs as "flip_ratio/<quantizer name>". None: the metrics of the
    enclosing `kbnn.context.metrics_scope` when a kbnn layer takes it as a
    kernel quantizer.

    `integer_valued` is true when every output is an integer of magnitude at
    most 127 (-1, 0, +1 for the sign family), so int8 and bfloat16 hold it
    exactly: a layer whose input and kernel quantizers both are
    `integer_valued` keeps its input as int8 for the backward pass and can
    compute its product in bfloat16 (`kbnn.exact_product`). A subclass whose
    `call` scales or shifts the values must set it to False.
    """

    precision = None
    integer_valued = False

    def __init__(self, metrics=None, **kwargs):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.training_metrics = None if metrics is None else list(metrics)
        for metric in self.training_metrics or ():
            if metric != "flip_ratio":
                raise ValueError(f"Unknown quantizer metric {metric!r}; known: flip_ratio.")

    def build(self, input_shape):
        if "flip_ratio" in (self.training_metrics or ()):
            self.flip_ratio = FlipRatio(name=f"flip_ratio/{self.name}")
            self.flip_ratio.build(input_shape)
        super().build(input_shape)

    def __call__(self, inputs, *args, training=None, **kwargs):
        outputs = super().__call__(inputs, *args, training=training, **kwargs)
        if (training and hasattr(self, "flip_ratio")
                and not isinstance(outputs, keras.KerasTensor)):
            self.flip_ratio.update_state(outputs)
        return outputs

    def get_config(self):
        config = super().get_config()
        if self.training_metrics is not None:
            config["metrics"] = self.training_metrics
        return config

    def compute_output_shape(self, input_shape):
        return input_shape

    def levels(self, kernel):
        """(low, high) per output channel (last axis) of `kernel`, quantized at inference.

        For a binary quantizer: the two values each channel's weights take,
        so the exporter can store one bit per weight. This default reads
        them off the quantized kernel (a channel of one value gives it
        twice); quantizers with fixed levels override it.
        """
        quantized = tf.convert_to_tensor(self(kernel, training=False))
        axes = list(range(len(quantized.shape) - 1))
        return tf.reduce_min(quantized, axis=axes), tf.reduce_max(quantized, axis=axes)


class BinaryQuantizer(Quantizer):
    """Base class of quantizers with two output levels per output channel.

    `levels(kernel)` gives those levels, so the exporter can store each
    quantized weight as one bit (1 for `high`, 0 for `low`).
    """

    precision = 1

    def levels(self, kernel):
        """(low, high) per output channel (last axis) of `kernel`: -1 and +1."""
        ones = tf.ones([kernel.shape[-1]])
        return -ones, ones


class _SignQuantizer(BinaryQuantizer):
    """Shared config handling of the binary quantizers with a clip value."""

    integer_valued = True

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

    def call(self, inputs, training=None):
        if training and _uses_ops(inputs, self.clip_value):
            return _ste_sign_with_ops(inputs, self.clip_value)
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
        if training and _uses_ops(inputs, self.clip_value):
            return _stochastic_sign_with_ops(inputs, self.seed_generator, self.clip_value)
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

    integer_valued = True

    def call(self, inputs):
        return approx_sign(inputs)


@keras.saving.register_keras_serializable(package="kbnn")
class SwishSign(BinaryQuantizer):
    """`swish_sign` as a serializable quantizer, with its `beta`."""

    integer_valued = True

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

    integer_valued = False  # scaled by the mean |x|

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


@keras.saving.register_keras_serializable(package="kbnn")
class SteTern(Quantizer):
    """`ste_tern` as a serializable quantizer (values -1, 0, +1; precision 2).

    >>> kbnn.quantizers.SteTern(threshold_value=0.5)(np.array([-0.7, 0.2, 0.5])).numpy()
    array([-1.,  0.,  1.], dtype=float32)
    """

    precision = 2
    integer_valued = True

    def __init__(self, threshold_value=0.05, ternary_weight_networks=False, clip_value=1.0,
                 **kwargs):
        super().__init__(**kwargs)
        self.threshold_value = threshold_value
        self.ternary_weight_networks = ternary_weight_networks
        self.clip_value = clip_value

    def call(self, inputs):
        return ste_tern(inputs, threshold_value=self.threshold_value,
                        ternary_weight_networks=self.ternary_weight_networks,
                        clip_value=self.clip_value)

    def get_config(self):
        return {**super().get_config(), "threshold_value": self.threshold_value,
                "ternary_weight_networks": self.ternary_weight_networks,
                "clip_value": self.clip_value}


@keras.saving.register_keras_serializable(package="kbnn")
class DoReFa(Quantizer):
    """`dorefa_quantizer` as a serializable quantizer; its precision is `k_bit`.

    Use mode="activations" (the default) as an input quantizer and
    mode="weights" as a kernel quantizer, as in Larq.

    >>> kbnn.quantizers.DoReFa(k_bit=3, mode="weights").precision
    3
    """

    def __init__(self, k_bit=2, mode="activations", **kwargs):
        if mode not in DOREFA_MODES:
            raise ValueError(f"Unknown DoReFa mode {mode!r}; use 'activations' or 'weights'.")
        super().__init__(**kwargs)
        self.precision = k_bit
        self.mode = mode

    @property
    def k_bit(self):
        return self.precision

    def call(self, inputs):
        return dorefa_quantizer(inputs, k_bit=self.precision, mode=self.mode)

    def get_config(self):
        return {**super().get_config(), "k_bit": self.precision, "mode": self.mode}


@keras.saving.register_keras_serializable(package="kbnn")
class NoOp(Quantizer):
    """Leaves values as they are, but marks them with a `precision` (as in Larq).

    For tagging weights a custom training step treats as `precision`-bit; no
    quantizer of kbnn's treats a NoOp as binary (`is_binary` is false), since
    its values are not binarized.

    >>> kbnn.quantizers.NoOp(precision=1)(np.array([0.3, -2.0])).numpy()
    array([ 0.3, -2. ], dtype=float32)
    """

    def __init__(self, precision, **kwargs):
        super().__init__(**kwargs)
        self.precision = precision

    def call(self, inputs):
        return inputs

    def get_config(self):
        return {**super().get_config(), "precision": self.precision}


# Larq's former names, kept there for old code and model files.
DoReFaQuantizer = DoReFa
NoOpQuantizer = NoOp

_BY_NAME = {
    "ste_sign": SteSign,
    "stochastic_sign": StochasticSign,
    "approx_sign": ApproxSign,
    "swish_sign": SwishSign,
    "magnitude_aware_sign": MagnitudeAwareSign,
    "ste_heaviside": SteHeaviside,
    "ste_tern": SteTern,
    "dorefa_quantizer": DoReFa,
}
_BY_FUNCTION = {globals()[name]: cls for name, cls in _BY_NAME.items()}
_BY_CLASS_NAME = {cls.__name__: cls for cls in _BY_NAME.values()}
# By dict only: NoOp has no default precision.
_BY_CLASS_NAME.update(NoOp=NoOp, NoOpQuantizer=NoOp, DoReFaQuantizer=DoReFa)


def get(identifier):
    """The quantizer named by a string, config dict, object or callable.

    >>> type(kbnn.quantizers.get("approx_sign")).__name__
    'ApproxSign'
    >>> kbnn.quantizers.get(None) is None
    True

    Strings are the snake-case names ("ste_sign", "stochastic_sign",
    "approx_sign", "swish_sign", "magnitude_aware_sign", "ste_heaviside",
    "ste_tern", "dorefa_quantizer") or the class names; dicts come from
    `serialize` (or are Larq-style `{"class_name": "SteSign", "config": {...}}`);
    one of this module's plain functions becomes its class with default
    arguments (so it serializes); any other callable is used as it is.
    """
    if identifier is None or isinstance(identifier, Quantizer):
        return identifier
    if isinstance(identifier, str):
        cls = _BY_NAME.get(identifier) or _BY_CLASS_NAME.get(identifier)
        if cls is NoOp:
            raise ValueError(f"Quantizer {identifier!r} needs a precision: pass "
                             f"kbnn.quantizers.NoOp(precision=...) instead of a string.")
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
    `kbnn.summary` and get packed by the exporter: its `precision` is 1 and
    it is not a `NoOp` (which marks values without binarizing them).

    >>> kbnn.quantizers.is_binary(kbnn.quantizers.get("ste_sign"))
    True
    >>> kbnn.quantizers.is_binary(None)
    False
    """
    return getattr(quantizer, "precision", None) == 1 and not isinstance(quantizer, NoOp)
