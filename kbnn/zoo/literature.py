"""The Larq Zoo architectures as kbnn builders: ImageNet-sized binary networks.

>>> from kbnn.zoo import quicknet, birealnet
>>> model = quicknet(input_shape=(64, 64, 3), num_classes=10)
>>> model.output_shape
(None, 10)
>>> features = birealnet(input_shape=(64, 64, 3), include_top=False)
>>> features.output_shape
(None, 2, 2, 512)

Each builder rebuilds one model of Larq Zoo 2.4.0 layer by layer (same layers in
the same order, same quantizers, clip values, constraints, initializers, padding
and batch-norm settings), so at 224x224x3 and 1000 classes it has exactly Larq
Zoo's parameter counts, and a weights file that Larq Zoo saved, including the
`.h5` files it releases, loads into it (positionally, as Keras loads `.h5`
files) and predicts what Larq Zoo's model predicts, to float rounding:

    model = kbnn.zoo.quicknet(weights="quicknet_weights.h5")

Like Larq Zoo's models they include no preprocessing (prepare images as Larq
Zoo's `preprocess_input` does) and end, with `include_top=True`, in a softmax
over `num_classes`; with `include_top=False` they end with the last feature map.

ImageNet weights are not shipped with kbnn: Larq Zoo releases them on its GitHub
releases page. `larq_zoo_weights(builder)` gives the address of a builder's file
with its sha256 digest, which `weights=` accepts (keras.utils.get_file then
downloads the file once and checks it):

>>> larq_zoo_weights("quicknet")  # doctest: +ELLIPSIS
'https://github.com/larq/zoo/releases/download/quicknet-v1.0/quicknet_weights.h5#sha256=8aba...'

`LITERATURE_BUILDERS` maps each builder's name to the builder. They are not in
`kbnn.zoo.BUILDERS`, the Fashion-MNIST builders that `python -m kbnn.train`
trains: these end in a softmax, not logits, and need ImageNet-sized inputs.
"""

import math
import numbers

import keras
import tensorflow as tf
from keras import ops

from kbnn import quantizers
from kbnn.constraints import WeightClip
from kbnn.layers import ChannelSlice, QuantConv2D, QuantDense, QuantDepthwiseConv2D
from kbnn.zoo.spec import Argument, Flag, Integer, builder

__all__ = [
    "quicknet_small", "quicknet", "quicknet_large", "birealnet", "binary_resnet_e18",
    "binary_densenet28", "binary_densenet37", "binary_densenet37_dilated",
    "binary_densenet45", "meliusnet22", "real_to_binary_net", "binary_alexnet", "xnornet",
    "dorefanet", "larq_zoo_weights", "LITERATURE_BUILDERS", "BlurPool", "ChannelSlice",
    "XnorWeightScale", "MagnitudeAwareSignUnclipped",
]


class ImageShape:
    """(height, width, channels) of the input images: positive integers, height and
    width may be None (any size); a list in JSON, `--input-shape 224 224 3` on the
    command line."""

    type = tuple

    def check(self, name, value):
        try:
            shape = tuple(value)
        except TypeError:
            shape = value
        positive = lambda d: (isinstance(d, numbers.Integral) and not isinstance(d, bool)
                              and d > 0)
        if not (isinstance(shape, tuple) and len(shape) == 3 and positive(shape[2])
                and all(d is None or positive(d) for d in shape[:2])):
            raise ValueError(f"{name}={value!r}: give (height, width, channels), positive "
                             f"integers (height and width may be None), e.g. "
                             f"{name}=(224, 224, 3).")
        return tuple(None if d is None else int(d) for d in shape)

    def to_json(self, value):
        return list(value)

    def cli(self):
        return {"type": int, "nargs": 3, "metavar": ("H", "W", "C")}

    def show(self, value):
        return " ".join(map(str, value))


_INPUT_SHAPE = Argument("input_shape", ImageShape(),
                        "(height, width, channels) of the input images.")
_NUM_CLASSES = Argument("num_classes", Integer(),
                        "number of classes of the classifier (with include_top).")
_INCLUDE_TOP = Argument("include_top", Flag(),
                        "end with the pooled classifier and its softmax; False ends with "
                        "the last feature map.")
_ARGUMENTS = (_INPUT_SHAPE, _NUM_CLASSES, _INCLUDE_TOP)


# --- Pieces that Larq Zoo's model files define for themselves ---------------------------

@keras.saving.register_keras_serializable(package="kbnn")
class BlurPool(keras.initializers.Initializer):
    """Anti-aliasing blur kernel for a depthwise convolution (QuickNet's transitions).

    The binomial filter [1, 2, 1] (for size 3; [1, 1] for 2, [1, 4, 6, 4, 1] for 5)
    in both directions, normalized to sum 1, for every channel (Zhang, "Making
    Convolutional Networks Shift-Invariant Again", 2019).

    >>> BlurPool()((3, 3, 1, 1))[:, :, 0, 0].numpy() * 16
    array([[1., 2., 1.],
           [2., 4., 2.],
           [1., 2., 1.]], dtype=float32)
    """

    _ROWS = {2: [1.0, 1.0], 3: [1.0, 2.0, 1.0], 5: [1.0, 4.0, 6.0, 4.0, 1.0]}

    def __call__(self, shape, dtype=None):
        size = shape[0]
        if size not in self._ROWS or shape[1] != size:
            raise ValueError(f"BlurPool: kernel size {tuple(shape[:2])} is not one of "
                             f"(2, 2), (3, 3), (5, 5).")
        row = ops.convert_to_tensor(self._ROWS[size])
        kernel = ops.outer(row, row) / ops.sum(ops.outer(row, row))
        kernel = ops.broadcast_to(kernel[:, :, None, None], tuple(shape))
        return ops.cast(kernel, dtype or "float32")


def _all_but_last(x):
    return list(range(len(x.shape) - 1))


@keras.saving.register_keras_serializable(package="kbnn")
class XnorWeightScale(quantizers.BinaryQuantizer):
    """XNOR-Net's kernel binarizer: clip to [-1, 1], then sign times each output
    channel's mean |w| (Rastegari et al., 2016).

    The scale is differentiated (as in Larq Zoo's XNOR-Net); the sign has the
    straight-through gradient of `ste_sign`.

    >>> XnorWeightScale()(np.array([[0.5, -2.0], [-0.5, 0.0]], "float32")).numpy()
    array([[ 0.5, -0.5],
           [-0.5,  0.5]], dtype=float32)
    """

    def call(self, inputs):
        x = tf.clip_by_value(inputs, -1.0, 1.0)
        scale = tf.reduce_mean(tf.abs(x), axis=_all_but_last(x), keepdims=True)
        return scale * quantizers.ste_sign(x)

    def levels(self, kernel):
        x = tf.clip_by_value(tf.convert_to_tensor(kernel), -1.0, 1.0)
        scale = tf.reduce_mean(tf.abs(x), axis=_all_but_last(x))
        return -scale, scale


@keras.saving.register_keras_serializable(package="kbnn")
class MagnitudeAwareSignUnclipped(quantizers.BinaryQuantizer):
    """DoReFa-Net's kernel binarizer: sign times the mean |w| of the whole kernel,
    with the identity as gradient (Zhou et al., 2016).

    >>> MagnitudeAwareSignUnclipped()(np.array([[3.0, -1.0]], "float32")).numpy()
    array([[ 2., -2.]], dtype=float32)
    """

    def call(self, inputs):
        x = tf.convert_to_tensor(inputs)
        scale = tf.stop_gradient(tf.reduce_mean(tf.abs(x)))

        @tf.custom_gradient
        def _scaled_sign(x):
            return quantizers.sign(x) * scale, lambda dy: dy

        return _scaled_sign(x)

    def levels(self, kernel):
        kernel = tf.convert_to_tensor(kernel)
        scale = tf.fill([kernel.shape[-1]], tf.reduce_mean(tf.abs(kernel)))
        return -scale, scale


# --- Shared building blocks ---------------------------------------------------------------

def _batch_norm(momentum=0.99, epsilon=1e-3, **kwargs):
    return keras.layers.BatchNormalization(momentum=momentum, epsilon=epsilon, **kwargs)


def _global_pool(x, name=None):
    """Average over the whole feature map, then flatten (as Larq Zoo does).

    A pooling window of the map's size, not GlobalAveragePooling2D, so the sums are
    those of Larq Zoo's models (and AVERAGE_POOL_2D is what LCE runs fastest); a
    map of unknown size falls back to GlobalAveragePooling2D.
    """
    height, width = x.shape[1:3]
    if height is None or width is None:
        return keras.layers.GlobalAveragePooling2D(name=name)(x)
    x = keras.layers.AveragePooling2D((height, width),
                                      name=f"{name}_pool" if name else None)(x)
    return keras.layers.Flatten(name=f"{name}_flatten" if name else None)(x)


def _softmax(x, name=None):
    return keras.layers.Activation("softmax", dtype="float32", name=name)(x)


def _relu(x, name=None):
    return keras.layers.Activation("relu", name=name)(x)


def _clipped_sign(clip_value):
    """Binary convolution arguments of the SteSign(clip) / WeightClip(clip) models."""
    return dict(input_quantizer=quantizers.SteSign(clip_value=clip_value),
                kernel_quantizer=quantizers.SteSign(clip_value=clip_value),
                kernel_constraint=WeightClip(clip_value))


def _stem_7x7(inputs, initializer, momentum, epsilon, relu, name=None):
    """7x7/2 convolution, batch norm, [ReLU], 3x3/2 max-pool (ResNet's stem)."""
    x = keras.layers.Conv2D(64, 7, strides=2, padding="same", use_bias=False,
                            kernel_initializer=initializer,
                            name=f"{name}_conv2d" if name else None)(inputs)
    x = _batch_norm(momentum, epsilon, name=f"{name}_batch_norm" if name else None)(x)
    if relu:
        x = relu(x)
    return keras.layers.MaxPooling2D(3, strides=2, padding="same",
                                     name=f"{name}_pool" if name else None)(x)


# --- QuickNet (Larq Zoo's sota.QuickNet*) ---------------------------------------------------

def _quicknet(inputs, section_blocks, section_filters, include_top, num_classes, name):
    filters = section_filters[0]
    x = QuantConv2D(filters // 4, 3, strides=2, padding="same", use_bias=False,
                    kernel_initializer="he_normal")(inputs)
    x = _batch_norm()(x)
    x = _relu(x)
    x = QuantDepthwiseConv2D(3, strides=2, padding="same", use_bias=False)(x)
    x = _batch_norm(scale=False, center=False)(x)
    x = QuantConv2D(filters, 1, use_bias=False, kernel_initializer="he_normal")(x)
    x = _batch_norm()(x)
    for blocks, filters in zip(section_blocks, section_filters):
        for _ in range(blocks):
            if x.shape[-1] != filters:
                # Transition: blur-pooled downsampling (a fixed, untrained kernel), then a
                # real-valued 1x1 convolution to the section's width.
                x = _relu(x)
                x = keras.layers.MaxPooling2D(2, strides=1)(x)
                x = keras.layers.DepthwiseConv2D(
                    3, strides=2, padding="same", use_bias=False,
                    depthwise_initializer=BlurPool(), trainable=False)(x)
                x = QuantConv2D(filters, 1, use_bias=False,
                                kernel_initializer="glorot_normal")(x)
                x = _batch_norm(0.9, 1e-5)(x)
            # Residual block: binary 3x3 convolution whose "same" padding is +1, not 0,
            # so that the padded input is binary too (what LCE's kernels compute).
            y = QuantConv2D(x.shape[-1], 3, padding="same", pad_values=1.0,
                            activation="relu", use_bias=False,
                            kernel_initializer="glorot_normal", **_clipped_sign(1.25))(x)
            y = _batch_norm(0.9, 1e-5)(y)
            x = keras.layers.Add()([y, x])
    if include_top:
        x = _relu(x)
        x = _global_pool(x)
        x = QuantDense(num_classes, kernel_initializer="glorot_normal")(x)
        x = _softmax(x)
    return keras.Model(inputs, x, name=name)


@builder(*_ARGUMENTS)
def quicknet_small(input_shape=(224, 224, 3), num_classes=1000, include_top=True,
                   name=None):
    """QuickNetSmall (Larq Zoo): QuickNet with sections 32-64-256-512 wide.

    >>> quicknet_small(input_shape=(64, 64, 3), num_classes=10).output_shape
    (None, 10)

    At 224x224x3 and 1000 classes: 12,664,344 parameters, 12,652,504 trainable.
    """
    return _quicknet(keras.Input(input_shape), (4, 4, 4, 4), (32, 64, 256, 512),
                     include_top, num_classes, name or "quicknet_small")


@builder(*_ARGUMENTS)
def quicknet(input_shape=(224, 224, 3), num_classes=1000, include_top=True, name=None):
    """QuickNet (Larq Zoo, Bannink et al. 2021): a binary ResNet designed for LCE.

    >>> quicknet(input_shape=(64, 64, 3), num_classes=10).output_shape
    (None, 10)

    A real-valued stem (3x3/2 convolution, 3x3/2 depthwise, 1x1), then four
    sections of 4 residual blocks (64-128-256-512 wide), each a binary 3x3
    convolution (SteSign(1.25) on inputs and kernel, WeightClip(1.25), padding
    with +1, ReLU, batch norm) added to its input; between sections a blur-pool
    transition with a real-valued 1x1 convolution. At 224x224x3 and 1000 classes:
    13,243,720 parameters, 13,230,024 trainable.
    """
    return _quicknet(keras.Input(input_shape), (4, 4, 4, 4), (64, 128, 256, 512),
                     include_top, num_classes, name or "quicknet")


@builder(*_ARGUMENTS)
def quicknet_large(input_shape=(224, 224, 3), num_classes=1000, include_top=True,
                   name=None):
    """QuickNetLarge (Larq Zoo): QuickNet with 6-8-12-6 blocks per section.

    >>> quicknet_large(input_shape=(64, 64, 3), include_top=False).output_shape
    (None, 2, 2, 512)

    At 224x224x3 and 1000 classes: 23,359,304 parameters, 23,338,184 trainable.
    """
    return _quicknet(keras.Input(input_shape), (6, 8, 12, 6), (64, 128, 256, 512),
                     include_top, num_classes, name or "quicknet_large")


# --- Bi-Real Net and Binary ResNet-E -------------------------------------------------------

@builder(*_ARGUMENTS)
def birealnet(input_shape=(224, 224, 3), num_classes=1000, include_top=True, name=None):
    """Bi-Real Net 18 (Liu et al., 2018): every binary convolution has a shortcut.

    >>> birealnet(input_shape=(64, 64, 3), num_classes=10).output_shape
    (None, 10)

    A 7x7 real-valued stem, then 16 blocks of one binary 3x3 convolution
    (approx_sign on inputs, magnitude_aware_sign on the kernel, weight_clip) with
    batch norm, added to the block's input; where a block doubles the width, the
    shortcut is average-pooled and goes through a real-valued 1x1 convolution.
    At 224x224x3 and 1000 classes: 11,699,112 parameters, 11,689,512 trainable.
    """
    inputs = keras.Input(input_shape)
    x = _stem_7x7(inputs, "glorot_normal", 0.8, 1e-3, relu=None)
    widths = [64] * 4 + [128] * 4 + [256] * 4 + [512] * 4
    for width in widths:
        shortcut = x
        if x.shape[-1] != width:
            shortcut = keras.layers.AveragePooling2D(2, strides=2, padding="same")(shortcut)
            shortcut = keras.layers.Conv2D(width, 1, use_bias=False,
                                           kernel_initializer="glorot_normal")(shortcut)
            shortcut = _batch_norm(0.8)(shortcut)
        y = QuantConv2D(width, 3, strides=1 if x.shape[-1] == width else 2, padding="same",
                        input_quantizer="approx_sign", kernel_quantizer="magnitude_aware_sign",
                        kernel_constraint="weight_clip", kernel_initializer="glorot_normal",
                        use_bias=False)(x)
        y = _batch_norm(0.8)(y)
        x = keras.layers.Add()([y, shortcut])
    if include_top:
        x = _global_pool(x)
        x = keras.layers.Dense(num_classes)(x)
        x = _softmax(x)
    return keras.Model(inputs, x, name=name or "birealnet18")


@builder(*_ARGUMENTS)
def binary_resnet_e18(input_shape=(224, 224, 3), num_classes=1000, include_top=True,
                      name=None):
    """Binary ResNet-E 18 (Bethge et al., 2019): a shortcut around every binary convolution.

    >>> binary_resnet_e18(input_shape=(64, 64, 3), num_classes=10).output_shape
    (None, 10)

    Like `birealnet`, with SteSign(1.25) on inputs and kernels, WeightClip(1.25),
    and batch norm after the stem's max-pool. Inputs smaller than 50 pixels get a
    3x3 stem without downsampling instead (as in Larq Zoo). At 224x224x3 and 1000
    classes: 11,699,368 parameters, 11,689,640 trainable.
    """
    inputs = keras.Input(input_shape)
    if input_shape[0] is not None and input_shape[0] < 50:
        x = keras.layers.Conv2D(64, 3, padding="same", use_bias=False,
                                kernel_initializer="he_normal")(inputs)
    else:
        x = _stem_7x7(inputs, "he_normal", 0.9, 1e-5, relu=_relu)
        x = _batch_norm(0.9, 1e-5)(x)
    # ResNet-18's sections, two shortcut blocks per original two-convolution block.
    for section, width in enumerate((64, 128, 256, 512)):
        for block in range(4):
            shortcut = x
            if x.shape[-1] != width:
                shortcut = keras.layers.AveragePooling2D(2, strides=2)(shortcut)
                shortcut = keras.layers.Conv2D(width, 1, use_bias=False,
                                               kernel_initializer="glorot_normal")(shortcut)
                shortcut = _batch_norm(0.9, 1e-5)(shortcut)
            y = QuantConv2D(width, 3, strides=2 if section and not block else 1,
                            padding="same", use_bias=False,
                            kernel_initializer="glorot_normal", **_clipped_sign(1.25))(x)
            y = _batch_norm(0.9, 1e-5)(y)
            x = keras.layers.Add()([y, shortcut])
    x = _relu(x)
    if include_top:
        x = _global_pool(x)
        x = keras.layers.Dense(num_classes, kernel_initializer="glorot_normal")(x)
        x = _softmax(x)
    return keras.Model(inputs, x, name=name or "binary_resnet_e_18")


# --- Binary DenseNets and MeliusNet ---------------------------------------------------------

def _binary_densenet(inputs, blocks, reduction, dilation, include_top, num_classes, name):
    """BinaryDenseNet (Bethge et al., 2019): each layer concatenates 64 binary features."""
    if inputs.shape[1] is not None and inputs.shape[1] < 50:
        x = keras.layers.Conv2D(64, 3, padding="same", use_bias=False,
                                kernel_initializer="he_normal")(inputs)
    else:
        x = _stem_7x7(inputs, "he_normal", 0.9, 1e-5, relu=_relu)
    for section, layers in enumerate(blocks):
        for _ in range(layers):
            y = _batch_norm(0.9, 1e-5)(x)
            y = QuantConv2D(64, 3, dilation_rate=dilation[section], padding="same",
                            use_bias=False, kernel_initializer="glorot_normal",
                            **_clipped_sign(1.3))(y)
            x = keras.layers.Concatenate()([x, y])
        if section < len(blocks) - 1:
            x = _batch_norm(0.9, 1e-5)(x)
            if dilation[section + 1] == 1:
                x = keras.layers.MaxPooling2D(2, strides=2)(x)
            x = _relu(x)
            # Larq Zoo's rounding, floor division by a float then Python's round, to
            # the same multiple of 32.
            width = round(x.shape[-1] // reduction[section] / 32) * 32
            x = keras.layers.Conv2D(width, 1, use_bias=False,
                                    kernel_initializer="he_normal")(x)
    x = _batch_norm(0.9, 1e-5)(x)
    x = _relu(x)
    if include_top:
        x = _global_pool(x)
        x = keras.layers.Dense(num_classes, kernel_initializer="he_normal")(x)
        x = _softmax(x)
    return keras.Model(inputs, x, name=name)


@builder(*_ARGUMENTS)
def binary_densenet28(input_shape=(224, 224, 3), num_classes=1000, include_top=True,
                      name=None):
    """BinaryDenseNet28 (Larq Zoo): 6-6-6-5 binary dense layers, reductions 2.7, 2.7, 2.2.

    >>> binary_densenet28(input_shape=(64, 64, 3), num_classes=10).output_shape
    (None, 10)

    Each dense layer is batch norm, then a binary 3x3 convolution to 64 channels
    (SteSign(1.3) on inputs and kernel, WeightClip(1.3)) concatenated to its
    input; transitions are batch norm, 2x2 max-pool, ReLU and a real-valued 1x1
    convolution. At 224x224x3 and 1000 classes: 5,150,504 parameters, 5,131,496
    trainable.
    """
    return _binary_densenet(keras.Input(input_shape), (6, 6, 6, 5), (2.7, 2.7, 2.2),
                            (1, 1, 1, 1), include_top, num_classes,
                            name or "binary_densenet28")


@builder(*_ARGUMENTS)
def binary_densenet37(input_shape=(224, 224, 3), num_classes=1000, include_top=True,
                      name=None):
    """BinaryDenseNet37 (Larq Zoo): 6-8-12-6 binary dense layers, reductions 3.3, 3.3, 4.

    >>> binary_densenet37(input_shape=(64, 64, 3), num_classes=10).output_shape
    (None, 10)

    At 224x224x3 and 1000 classes: 8,734,120 parameters, 8,702,248 trainable.
    """
    return _binary_densenet(keras.Input(input_shape), (6, 8, 12, 6), (3.3, 3.3, 4),
                            (1, 1, 1, 1), include_top, num_classes,
                            name or "binary_densenet37")


@builder(*_ARGUMENTS)
def binary_densenet37_dilated(input_shape=(224, 224, 3), num_classes=1000,
                              include_top=True, name=None):
    """BinaryDenseNet37Dilated (Larq Zoo): BinaryDenseNet37 whose last two sections
    dilate (rates 2 and 4) instead of pooling, for a 28x28 final map at 224x224.

    >>> binary_densenet37_dilated(input_shape=(64, 64, 3), include_top=False).output_shape
    (None, 8, 8, 640)

    At 224x224x3 and 1000 classes: 8,734,120 parameters, 8,702,248 trainable.
    """
    return _binary_densenet(keras.Input(input_shape), (6, 8, 12, 6), (3.3, 3.3, 4),
                            (1, 1, 2, 4), include_top, num_classes,
                            name or "binary_densenet37_dilated")


@builder(*_ARGUMENTS)
def binary_densenet45(input_shape=(224, 224, 3), num_classes=1000, include_top=True,
                      name=None):
    """BinaryDenseNet45 (Larq Zoo): 6-12-14-8 binary dense layers, reductions 2.7, 3.3, 4.

    >>> binary_densenet45(input_shape=(64, 64, 3), num_classes=10).output_shape
    (None, 10)

    At 224x224x3 and 1000 classes: 13,939,240 parameters, 13,889,512 trainable.
    """
    return _binary_densenet(keras.Input(input_shape), (6, 12, 14, 8), (2.7, 3.3, 4),
                            (1, 1, 1, 1), include_top, num_classes,
                            name or "binary_densenet45")


def _group_conv(x, filters, groups, name):
    """A 3x3 grouped convolution as Larq Zoo builds it: one Conv2D per group (so its
    files hold one kernel per group), the groups' outputs concatenated."""
    width = x.shape[-1] // groups
    outputs = [
        keras.layers.Conv2D(filters // groups, 3, padding="same", use_bias=False,
                            kernel_initializer="glorot_normal", name=f"{name}_conv{i}")(
            ChannelSlice(i * width, (i + 1) * width, name=f"{name}_split{i}")(x))
        for i in range(groups)
    ]
    return keras.layers.Concatenate(name=f"{name}_concat")(outputs)


@builder(*_ARGUMENTS)
def meliusnet22(input_shape=(224, 224, 3), num_classes=1000, include_top=True, name=None):
    """MeliusNet22 (Bethge et al., 2020): dense blocks whose output an improvement
    block refines.

    >>> meliusnet22(input_shape=(64, 64, 3), num_classes=10).output_shape
    (None, 10)

    A grouped-convolution stem; then sections of 4, 5, 4 and 4 blocks, each a
    dense block (batch norm, binary 3x3 convolution to 64 channels with
    SteSign(1.3) and WeightClip(1.3), concatenated) and an improvement block (the
    same, added to the newest 64 channels); transitions of batch norm, max-pool,
    ReLU and a 1x1 convolution to 160, 224, 256 channels. Layers carry Larq Zoo's
    names. At 224x224x3 and 1000 classes: 6,969,672 parameters, 6,944,584 trainable.
    """

    def norm(x, name):
        return _batch_norm(0.9, 1e-5, name=name)(x)

    def pool(x, name):
        return keras.layers.MaxPooling2D(2, strides=2, padding="same", name=name)(x)

    def binary_conv(x, name):
        x = norm(x, f"{name}_bn")
        return QuantConv2D(64, 3, padding="same", use_bias=False,
                           kernel_initializer="glorot_normal", name=f"{name}_binconv",
                           **_clipped_sign(1.3))(x)

    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False,
                            kernel_initializer="glorot_normal", name="stem_s0_conv")(inputs)
    x = _relu(norm(x, "stem_s0_bn"), "stem_s0_relu")
    x = _group_conv(x, 32, 4, "stem_s1_groupconv")
    x = _relu(norm(x, "stem_s1_bn"), "stem_s1_relu")
    x = _group_conv(x, 64, 8, "stem_s2_groupconv")
    x = _relu(norm(x, "stem_s2_bn"), "stem_s2_relu")
    x = pool(x, "stem_pool")
    for section, (blocks, transition) in enumerate(zip((4, 5, 4, 4), (160, 224, 256, None))):
        for block in range(blocks):
            name_ = f"section_{section}_block_{block}"
            w = binary_conv(x, f"{name_}_dense")
            x = keras.layers.Concatenate(name=f"{name_}_dense_concat")([x, w])
            # Improvement: x plus w zero-padded in front, i.e. w added to the last 64
            # channels (written as slices so that it needs no Lambda layer).
            w = binary_conv(x, f"{name_}_improve")
            width = x.shape[-1]
            x = keras.layers.Concatenate(name=f"{name_}_improve_merge")([
                ChannelSlice(0, width - 64, name=f"{name_}_improve_keep")(x),
                keras.layers.Add(name=f"{name_}_improve_add")(
                    [ChannelSlice(width - 64, width, name=f"{name_}_improve_last")(x), w]),
            ])
        if transition:
            prefix = f"section_{section}_transition"
            x = norm(x, f"{prefix}_bn")
            x = pool(x, f"{prefix}_maxpool")
            x = _relu(x, f"{prefix}_relu")
            x = keras.layers.Conv2D(transition, 1, use_bias=False,
                                    kernel_initializer="glorot_normal", name=f"{prefix}_pw")(x)
    x = _relu(norm(x, "head_bn"), "head_relu")
    if include_top:
        x = _global_pool(x, name="head_globalpool")
        x = keras.layers.Dense(num_classes, kernel_initializer="glorot_normal",
                               name="head_dense")(x)
        x = _softmax(x, name="head_softmax")
    return keras.Model(inputs, x, name=name or "meliusnet22")


# --- Real-to-Binary Net ---------------------------------------------------------------------

@builder(*_ARGUMENTS)
def real_to_binary_net(input_shape=(224, 224, 3), num_classes=1000, include_top=True,
                       name=None):
    """Real-to-Binary Net (Martinez et al., 2020), the binary student ("r2b_bnn").

    >>> real_to_binary_net(input_shape=(64, 64, 3), num_classes=10).output_shape
    (None, 10)

    A ResNet-18 layout of half-blocks: batch norm, binary 3x3 convolution
    (ste_sign on inputs and kernel, weight_clip), scaled per channel by a
    squeeze-and-excite gate computed from the real-valued input, PReLU, plus the
    shortcut. Layers carry Larq Zoo's names. At 224x224x3 and 1000 classes:
    11,995,624 parameters, 11,986,920 trainable.
    """
    prefix = name or "r2b_bnn"
    momentum = 0.99

    def half_block(x, downsample, name):
        in_channels = x.shape[-1]
        out_channels = 2 * in_channels if downsample else in_channels
        shortcut = x
        if out_channels != in_channels:
            shortcut = keras.layers.AveragePooling2D(
                2, strides=2, padding="same", name=f"{name}_shortcut_pool")(x)
            shortcut = keras.layers.Conv2D(
                out_channels, 1, use_bias=False, kernel_initializer="glorot_normal",
                name=f"{name}_shortcut_conv2d")(shortcut)
            shortcut = _batch_norm(momentum, name=f"{name}_shortcut_batch_norm")(shortcut)
        conv_input = _batch_norm(momentum, name=f"{name}_batch_norm")(x)
        y = QuantConv2D(out_channels, 3, strides=2 if downsample else 1, padding="same",
                        input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                        kernel_constraint="weight_clip", kernel_initializer="glorot_normal",
                        use_bias=False, name=f"{name}_conv2d")(conv_input)
        # Data-dependent scaling of the binary convolution's output channels.
        z = _global_pool(conv_input, name=f"{name}_scaling_pool")
        z = keras.layers.Dense(in_channels // 8, activation="relu", use_bias=False,
                               kernel_initializer="he_normal",
                               name=f"{name}_scaling_dense_reduce")(z)
        z = keras.layers.Dense(out_channels, activation="sigmoid", use_bias=False,
                               kernel_initializer="he_normal",
                               name=f"{name}_scaling_dense_expand")(z)
        z = keras.layers.Reshape((1, 1, out_channels), name=f"{name}_scaling_reshape")(z)
        y = keras.layers.Multiply(name=f"{name}_scaling_multiplication")([y, z])
        y = keras.layers.PReLU(shared_axes=[1, 2], name=f"{name}_prelu")(y)
        return keras.layers.Add(name=f"{name}_skip_add")([y, shortcut])

    inputs = keras.Input(input_shape)
    stem = f"{prefix}_block_1"
    x = _stem_7x7(inputs, "glorot_normal", momentum, 1e-3, name=stem,
                  relu=lambda x: keras.layers.PReLU(shared_axes=[1, 2],
                                                    name=f"{stem}_prelu")(x))
    for block in range(2, 10):
        block_name = f"{prefix}_block_{block}"
        x = half_block(x, block in (4, 6, 8), f"{block_name}a")
        x = half_block(x, False, f"{block_name}b")
        x = keras.layers.Identity(name=f"{block_name}_out")(x)
    if include_top:
        x = _global_pool(x, name=f"{prefix}_block_10_global_pool")
        x = keras.layers.Dense(num_classes, name=f"{prefix}_block_10_logits")(x)
        x = keras.layers.Softmax(dtype="float32", name=f"{prefix}_block_10_probs")(x)
    return keras.Model(inputs, x, name=prefix)


# --- AlexNet-style models -------------------------------------------------------------------

@builder(*_ARGUMENTS)
def binary_alexnet(input_shape=(224, 224, 3), num_classes=1000, include_top=True,
                   name=None):
    """Binary AlexNet (Hubara et al., 2016, as in Larq Zoo).

    >>> binary_alexnet(input_shape=(64, 64, 3), include_top=False).output_shape
    (None, 1, 1, 256)

    Five binary convolutions (ste_sign, weight_clip; the first sees the real
    image) with max-pools and batch norm (no scale), then the classifier as three
    binary 1x1 convolutions over the flattened features. At 224x224x3 and 1000
    classes: 61,859,192 parameters, 61,838,248 trainable.
    """

    def block(x, filters, kernel_size, strides=1, pool=False, first=False, padding="same"):
        x = QuantConv2D(filters, kernel_size, strides=strides, padding=padding,
                        input_quantizer=None if first else "ste_sign",
                        kernel_quantizer="ste_sign", kernel_constraint="weight_clip",
                        use_bias=False)(x)
        if pool:
            x = keras.layers.MaxPooling2D(3, strides=2)(x)
        return _batch_norm(0.9, scale=False)(x)

    inputs = keras.Input(input_shape)
    x = block(inputs, 64, 11, strides=4, pool=True, first=True)
    x = block(x, 192, 5, pool=True)
    x = block(x, 384, 3)
    x = block(x, 384, 3)
    x = block(x, 256, 3, pool=True)
    if include_top:
        size = x.shape[1:]
        x = keras.layers.Reshape((1, 1, math.prod(size) if None not in size else -1))(x)
        for units in (4096, 4096, num_classes):  # the dense layers, as 1x1 convolutions
            x = block(x, units, 1, padding="valid")
        x = keras.layers.Flatten()(x)
        x = _softmax(x)
    return keras.Model(inputs, x, name=name or "binary_alexnet")


@builder(*_ARGUMENTS)
def xnornet(input_shape=(224, 224, 3), num_classes=1000, include_top=True, name=None):
    """XNOR-Net (Rastegari et al., 2016, as in Larq Zoo): binary AlexNet with scaled kernels.

    >>> xnornet(include_top=False).output_shape
    (None, 1, 1, 4096)

    A real-valued 11x11/4 convolution, then binary convolutions (ste_sign on
    inputs; kernels binarized by `XnorWeightScale`, weight_clip, L2 5e-7) and a
    6x6 one, each followed by batch norm without scale. Inputs need at least
    217x217 pixels: the 6x6 convolution is unpadded and sees a 6x6 map at 224x224.
    At 224x224x3 and 1000 classes: 62,396,768 parameters, 62,377,440 trainable.
    """

    def binary_conv(x, filters, kernel_size, padding="same"):
        return QuantConv2D(filters, kernel_size, padding=padding, use_bias=False,
                           input_quantizer="ste_sign", kernel_quantizer=XnorWeightScale(),
                           kernel_constraint="weight_clip",
                           kernel_regularizer=keras.regularizers.L2(5e-7))(x)

    def norm(x, epsilon=1e-4):
        return _batch_norm(0.9, epsilon, scale=False)(x)

    def pool(x):
        return keras.layers.MaxPooling2D(3, strides=2)(x)

    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(96, 11, strides=4, padding="same", use_bias=False,
                            kernel_regularizer=keras.regularizers.L2(5e-7))(inputs)
    x = norm(x, 1e-5)
    x = _relu(x)
    x = norm(pool(x))
    x = norm(pool(binary_conv(x, 256, 5)))
    x = norm(binary_conv(x, 384, 3))
    x = norm(binary_conv(x, 384, 3))
    x = norm(pool(binary_conv(x, 256, 3)))
    x = norm(binary_conv(x, 4096, 6, padding="valid"))
    if include_top:
        x = norm(binary_conv(x, 4096, 1, padding="valid"), 1e-3)
        x = _relu(x)
        x = keras.layers.Flatten()(x)
        x = keras.layers.Dense(num_classes, use_bias=False,
                               kernel_regularizer=keras.regularizers.L2(5e-7))(x)
        x = _softmax(x)
    return keras.Model(inputs, x, name=name or "xnornet")


@builder(*_ARGUMENTS)
def dorefanet(input_shape=(224, 224, 3), num_classes=1000, include_top=True, name=None):
    """DoReFa-Net (Zhou et al., 2016, as in Larq Zoo): 2-bit activations, binary weights.

    >>> dorefanet(input_shape=(64, 64, 3), num_classes=10).output_shape
    (None, 10)

    A real-valued 12x12/4 convolution, then convolutions and dense layers whose
    inputs are quantized to 2 bits (DoReFa) and whose kernels are binarized with
    one scale per layer (`MagnitudeAwareSignUnclipped`), each followed by batch
    norm without scale. At 224x224x3 and 1000 classes: 62,403,912 parameters,
    62,384,968 trainable.
    """

    def norm(x):
        return _batch_norm(0.9, 1e-4, scale=False)(x)

    def block(x, filters, kernel_size, pool=False, pool_padding="same"):
        x = norm(QuantConv2D(filters, kernel_size, padding="same", use_bias=False,
                             input_quantizer=quantizers.DoReFa(k_bit=2),
                             kernel_quantizer=MagnitudeAwareSignUnclipped())(x))
        if pool:
            x = keras.layers.MaxPooling2D(3, strides=2, padding=pool_padding)(x)
        return x

    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(96, 12, strides=4, padding="valid")(inputs)
    x = block(x, 256, 5, pool=True)
    x = block(x, 384, 3, pool=True)
    x = block(x, 384, 3)
    x = block(x, 256, 3, pool=True, pool_padding="valid")
    if include_top:
        x = keras.layers.Flatten()(x)
        for _ in range(2):
            x = norm(QuantDense(4096, use_bias=False,
                                input_quantizer=quantizers.DoReFa(k_bit=2),
                                kernel_quantizer=MagnitudeAwareSignUnclipped())(x))
        x = keras.layers.ReLU(max_value=1.0)(x)  # Larq Zoo's clip to [0, 1]
        x = keras.layers.Dense(num_classes)(x)
        x = _softmax(x)
    return keras.Model(inputs, x, name=name or "dorefanet")


LITERATURE_BUILDERS = {builder.__name__: builder for builder in (
    quicknet_small, quicknet, quicknet_large, birealnet, binary_resnet_e18, binary_densenet28,
    binary_densenet37, binary_densenet37_dilated, binary_densenet45, meliusnet22,
    real_to_binary_net, binary_alexnet, xnornet, dorefanet)}

# Larq Zoo's released ImageNet weights: (release, file with the classifier, its sha256,
# file without it, its sha256), as Larq Zoo 2.4.0 names them.
_LARQ_ZOO_FILES = {
    "quicknet_small": ("quicknet-v1.0", "quicknet_small_weights.h5",
                       "1ac3b07df7f5a911dd0b49febb2486428ddf1ca130297c403815dfae5a1c71a2",
                       "quicknet-v1.0", "quicknet_small_weights_notop.h5",
                       "be8ba657155846be355c5580d1ea56eaf8282616de065ffc39257202f9f164ea"),
    "quicknet": ("quicknet-v1.0", "quicknet_weights.h5",
                 "8aba9e4e5f8d342faef04a0b2ae8e562da57dbb7d15162e8b3e091c951ba756c",
                 "quicknet-v1.0", "quicknet_weights_notop.h5",
                 "204414e438373f14f6056a1c098249f505a87dd238e18d3a47a9bd8b66227881"),
    "quicknet_large": ("quicknet-v1.0", "quicknet_large_weights.h5",
                       "c5158e8a59147b31370becd937825f4db8a5cdf308314874f678f596629be45c",
                       "quicknet-v1.0", "quicknet_large_weights_notop.h5",
                       "adcf154a2a8007e81bd6af77c035ffbf54cd6413b89a0ba294e23e76a82a1b78"),
    "birealnet": ("birealnet-v0.3.0", "birealnet_weights.h5",
                  "6e6efac1584fcd60dd024198c87f42eb53b5ec719a5ca1f527e1fe7e8b997117",
                  "birealnet-v0.3.0", "birealnet_weights_notop.h5",
                  "5148b61c0c2a1094bdef811f68bf4957d5ba5f83ad26437b7a4a6855441ab46b"),
    "binary_resnet_e18": ("resnet_e-v0.1.0", "resnet_e_18_weights.h5",
                          "bde4a64d42c164a7b10a28debbe1ad5b287c499bc0247ecb00449e6e89f3bf5b",
                          "resnet_e-v0.1.0", "resnet_e_18_weights_notop.h5",
                          "14cb037e47d223827a8d09db88ec73d60e4153a4464dca847e5ae1a155e7f525"),
    "binary_densenet28": (
        "binary_densenet-v0.1.0", "binary_densenet_28_weights.h5",
        "21fe3ca03eed244df9c41a2219876fcf03e73800932ec96a3e2a76af4747ac53",
        "binary_densenet-v0.1.0", "binary_densenet_28_weights_notop.h5",
        "a376df1e41772c4427edd1856072b934a89bf293bf911438bf6f751a9b2a28f5"),
    "binary_densenet37": (
        "binary_densenet-v0.1.0", "binary_densenet_37_weights.h5",
        "8056a5d52c3ed86a934893987d09a06f59a5166aa9bddcaedb050f111d0a7d76",
        "binary_densenet-v0.1.0", "binary_densenet_37_weights_notop.h5",
        "4e12bca9fd27580a5b833241c4eb35d6cc332878c406048e6ca8dbbc78d59175"),
    "binary_densenet37_dilated": (
        "binary_densenet-v0.1.0", "binary_densenet_37_dilated_weights.h5",
        "15c1bcd79b8dc22971382fbf79acf364a3f51049d0e584a11533e6fdbb7363d3",
        "binary_densenet-v0.1.1", "binary_densenet_37_dilated_weights_notop.h5",
        "8b31fbfdc8de08a46c6adcda1ced48ace0a2ff0ce45a05c72b2acc27901dd88b"),
    "binary_densenet45": (
        "binary_densenet-v0.1.0", "binary_densenet_45_weights.h5",
        "d00a0d26fbd2dba1bfba8c0306c770f3aeea5c370e99f963bb239bd916f72c37",
        "binary_densenet-v0.1.0", "binary_densenet_45_weights_notop.h5",
        "e72d5cc6b0afe4612f8be7b1f9bb48a53ba2c8468b57bf1266d2900c99fd2adf"),
    "meliusnet22": ("meliusnet22-v0.1.0", "meliusnet22_weights.h5",
                    "c1ba85e8389ae326009665ec13331e49fc3df4d0f925fa8553e224f7362c18ed",
                    "meliusnet22-v0.1.1", "meliusnet22_weights_notop.h5",
                    "abfc5c50049d72a14e44df0c1cb73896ece2a1ab4bf9bb48fede6cc2f5e0b58f"),
    "real_to_binary_net": ("r2b-v0.1.0", "r2b_weights.h5",
                           "e8fd16ca1ab9810ac3835f24f5c62758a57bc32a615f73aaa50d382d2b9617e1",
                           "r2b-v0.1.0", "r2b_weights_notop.h5",
                           "4ec47abf1a4da5c65f4908076257e8d5c812673891089a88c9d9e84e949d1dab"),
    "binary_alexnet": ("binary_alexnet-v0.3.0", "binary_alexnet_weights.h5",
                       "7fc065c47c5c1d92389e0bb988ce6df6a4fa09d803b866e2ba648069d6652d63",
                       "binary_alexnet-v0.2.1", "binary_alexnet_weights_notop.h5",
                       "1d41b33ff39cd28d13679392641bf7711174a96d182417f91df45d0548f5bb47"),
    "xnornet": ("xnornet-v0.2.0", "xnornet_weights.h5",
                "e6ba24f785655260ae76a2ef1fab520e3528243d9c8fac430299cd81dbeabe10",
                "xnornet-v0.2.1", "xnornet_weights_notop.h5",
                "20a17423090b2c80c6b7a6b62346faa4b2b7dc8d4da99efa792c9351cf86c3d5"),
    "dorefanet": ("dorefanet-v0.1.0", "dorefanet_weights.h5",
                  "645d7839d574faa3eeeca28f3115773d75da3ab67ff6876b4de12d10245ecf6a",
                  "dorefanet-v0.1.1", "dorefanet_weights_notop.h5",
                  "8650e8a86d8d3968722cf5f20bcebe74d6d7bb45bbf03c4bb8c6486343f37e31"),
}


def larq_zoo_weights(builder, include_top=True):
    """The address of Larq Zoo's released ImageNet weights for `builder`, with its sha256.

    >>> larq_zoo_weights("birealnet", include_top=False).split("/")[-2:]  # doctest: +ELLIPSIS
    ['birealnet-v0.3.0', 'birealnet_weights_notop.h5#sha256=5148...']

    Pass it as `weights=` to the builder (with the same `include_top`, at
    224x224x3 and 1000 classes): the file is downloaded once into the Keras cache
    and its digest checked. Nothing is downloaded until a builder is given it.
    """
    if builder not in _LARQ_ZOO_FILES:
        raise ValueError(f"No Larq Zoo weights for {builder!r}; builders: "
                         f"{', '.join(_LARQ_ZOO_FILES)}.")
    release, file, digest = _LARQ_ZOO_FILES[builder][0:3] if include_top else \
        _LARQ_ZOO_FILES[builder][3:6]
    return f"https://github.com/larq/zoo/releases/download/{release}/{file}#sha256={digest}"
