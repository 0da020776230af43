"""The Fashion-MNIST builders: binary models and their float twins.

Every builder returns an uncompiled `keras.Model` from 28x28x1 images in
[0, 1] to 10 logits. The binary models follow BinaryNet: the first layer takes
the real-valued image with binary weights, every quantized layer is followed
by batch normalization, activations between layers are binarized by the next
layer's input quantizer, and latent weights are clipped to [-1, 1].

>>> bnn_mlp((128,)).output_shape
(None, 10)

`binarization="stochastic"` binarizes the activations stochastically while
training (BinaryNet's Torch7 experiments); weights stay deterministic. At
inference both binarizations are the same sign function.
"""

import keras

from kbnn import quantizers
from kbnn.layers import QuantConv2D, QuantDense
from kbnn.zoo.spec import Argument, Choice, Flag, Integer, Rate, Widths, builder

__all__ = ["bnn_mlp", "float_mlp", "bnn_cnn", "float_cnn", "BUILDERS"]

INPUT_SHAPE = (28, 28, 1)
NUM_CLASSES = 10
BINARIZATIONS = ("deterministic", "stochastic")

# A zoo model needs at least one hidden layer (block): without one, a BNN's only
# layer would binarize the raw pixels, which are all >= 0.
_HIDDEN_UNITS = Argument("hidden_units", Widths(), "sizes of the hidden layers.",
                         flag="--hidden")
_FILTERS = Argument("filters", Widths(), "filters of each block's two 3x3 convolutions.")
_DENSE_UNITS = Argument("dense_units", Integer(), "width of the dense layer before the "
                        "classifier.")
_BINARIZATION = Argument("binarization", Choice(BINARIZATIONS),
                         "activation binarizer: 'deterministic' (sign) or 'stochastic' (+1 "
                         "with probability hard_sigmoid(x) while training).")
_INPUT_DROPOUT = Argument("input_dropout", Rate(), "dropout rate on the input pixels.",
                          architecture=False)
_DROPOUT = Argument("dropout", Rate(), "dropout rate before the output layer.",
                    architecture=False)
_SHORTCUTS = Argument("shortcuts", Flag(), "add real-valued shortcuts around the binary "
                      "convolutions (Bi-Real Net).")


def _activation_quantizer(binarization, seed):
    if binarization == "stochastic":
        return lambda i: quantizers.StochasticSign(seed=None if seed is None else seed + i)
    return lambda i: quantizers.SteSign()


def _binary(**kwargs):
    return dict(kernel_quantizer="ste_sign", kernel_constraint="weight_clip",
                use_bias=False, **kwargs)


def _batch_norm():
    # BinaryNet's settings (Lasagne's alpha=0.1, i.e. Keras momentum 0.9): a faster
    # running average than Keras' default 0.99, and a smaller epsilon.
    return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-4)


@builder(_HIDDEN_UNITS, _BINARIZATION, _INPUT_DROPOUT, _DROPOUT, released=("fashion_mnist",))
def bnn_mlp(hidden_units=(1024,), binarization="deterministic", input_dropout=0.1,
            dropout=0.2, seed=None, name=None):
    """Binary MLP 784-hidden...-10 (BinaryNet style).

    >>> bnn_mlp((128,), "stochastic").count_params()
    102184
    """
    act = _activation_quantizer(binarization, seed)
    inputs = keras.Input(INPUT_SHAPE)
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dropout(input_dropout)(x)
    for i, units in enumerate(hidden_units):
        x = QuantDense(units, input_quantizer=act(i) if i else None, **_binary())(x)
        x = _batch_norm()(x)
    x = keras.layers.Dropout(dropout)(x)
    x = QuantDense(NUM_CLASSES, input_quantizer=act(len(hidden_units)), **_binary())(x)
    outputs = _batch_norm()(x)
    name = name or f"bnn_mlp_{'_'.join(map(str, hidden_units))}_{binarization}"
    return keras.Model(inputs, outputs, name=name)


@builder(_HIDDEN_UNITS, _INPUT_DROPOUT, _DROPOUT, released=("fashion_mnist",))
def float_mlp(hidden_units=(1024,), input_dropout=0.1, dropout=0.2, name=None):
    """Float twin of `bnn_mlp`: Dense, batch norm and ReLU per hidden layer.

    >>> float_mlp((128,)).count_params()
    102154
    """
    inputs = keras.Input(INPUT_SHAPE)
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dropout(input_dropout)(x)
    for units in hidden_units:
        x = keras.layers.Dense(units, use_bias=False)(x)
        x = _batch_norm()(x)
        x = keras.layers.ReLU()(x)
    x = keras.layers.Dropout(dropout)(x)
    outputs = keras.layers.Dense(NUM_CLASSES)(x)
    name = name or f"float_mlp_{'_'.join(map(str, hidden_units))}"
    return keras.Model(inputs, outputs, name=name)


@builder(_FILTERS, _DENSE_UNITS, _BINARIZATION, _DROPOUT, _SHORTCUTS,
         released=("fashion_mnist",))
def bnn_cnn(filters=(48, 96, 192), dense_units=256, binarization="deterministic",
            dropout=0.2, shortcuts=False, seed=None, name=None):
    """Binary VGG-style CNN: per block two 3x3 convolutions and a 2x2 max-pool.

    >>> bnn_cnn().count_params() < 1_500_000
    True

    The first convolution sees the real-valued image; the rest get binarized
    activations. Pooling comes before batch norm, as in BinaryNet. The
    defaults are the released architecture, so `bnn_cnn(weights="fashion_mnist")`
    loads it.

    With `shortcuts=True` every binary convolution but the first also adds its
    real-valued input to its batch-normalized output (Bi-Real Net), so what the
    sign of a convolution's input discards still reaches the layers after it. The
    shortcut is average-pooled where the convolution's output is pooled and
    repeated along channels where a block widens (ReActNet), so it adds no
    parameters: the weights are those of `shortcuts=False`.

    >>> bnn_cnn(shortcuts=True).count_params() == bnn_cnn().count_params()
    True
    """
    if shortcuts:
        for narrow, wide in zip(filters, filters[1:]):
            if wide % narrow:
                raise ValueError(
                    f"filters={filters!r} with shortcuts=True: each block's width must be a "
                    f"multiple of the one before ({wide} is not a multiple of {narrow}), "
                    f"because the shortcut repeats channels; e.g. filters=(48, 96, 192).")
    act = _activation_quantizer(binarization, seed)
    inputs = keras.Input(INPUT_SHAPE)
    x, n = inputs, 0
    for block, width in enumerate(filters):
        for conv in range(2):
            first = block == 0 and conv == 0
            y = QuantConv2D(width, 3, padding="same",
                            input_quantizer=None if first else act(n), **_binary())(x)
            n += 1
            if conv == 1:
                y = keras.layers.MaxPooling2D(2)(y)
            y = _batch_norm()(y)
            if shortcuts and not first:
                y = keras.layers.Add()([y, _shortcut(x, width, pool=conv == 1)])
            x = y
    x = keras.layers.Flatten()(x)
    x = QuantDense(dense_units, input_quantizer=act(n), **_binary())(x)
    x = _batch_norm()(x)
    x = keras.layers.Dropout(dropout)(x)
    x = QuantDense(NUM_CLASSES, input_quantizer=act(n + 1), **_binary())(x)
    outputs = _batch_norm()(x)
    default_name = f"bnn_cnn_shortcuts_{binarization}" if shortcuts else f"bnn_cnn_{binarization}"
    return keras.Model(inputs, outputs, name=name or default_name)


def _shortcut(x, width, pool):
    """`x` shaped like a convolution's output: average-pooled, channels repeated."""
    if pool:
        x = keras.layers.AveragePooling2D(2)(x)
    repeats = width // x.shape[-1]
    return x if repeats == 1 else keras.layers.Concatenate()([x] * repeats)


@builder(_FILTERS, _DENSE_UNITS, _DROPOUT, released=("fashion_mnist",))
def float_cnn(filters=(32, 64, 128), dense_units=256, dropout=0.3, name=None):
    """Float twin of `bnn_cnn`: the same blocks with ReLU activations.

    >>> float_cnn().output_shape
    (None, 10)

    The defaults are the released float_cnn's architecture (narrower than the
    released bnn_cnn); pass the BNN's `filters` and `dense_units` for an exact twin.
    """
    inputs = keras.Input(INPUT_SHAPE)
    x = inputs
    for width in filters:
        for conv in range(2):
            x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
            x = _batch_norm()(x)
            x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(dense_units, use_bias=False)(x)
    x = _batch_norm()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Dropout(dropout)(x)
    outputs = keras.layers.Dense(NUM_CLASSES)(x)
    return keras.Model(inputs, outputs, name=name or "float_cnn")


BUILDERS = {"bnn_mlp": bnn_mlp, "float_mlp": float_mlp, "bnn_cnn": bnn_cnn,
            "float_cnn": float_cnn}
