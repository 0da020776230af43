"""Model files saved by Larq (0.13/0.14, on tf-keras) load into kbnn with Keras's own loader.

After `import kbnn`, `keras.models.load_model("larq_model.h5", compile=False)`
reads a whole-model HDF5 file that Larq wrote, with kbnn's layers and
quantizers in place of Larq's, and `model.load_weights("larq_weights.h5")`
reads Larq's weights into the same architecture built with kbnn:

>>> import keras, kbnn
>>> model = keras.models.load_model("tests/fixtures/larq_models/plain_bnn.h5", compile=False)
>>> type(model.layers[0]).__name__, model.layers[0].kernel_quantizer.__class__.__name__
('QuantConv2D', 'SteSign')

Pass `compile=False`: the file's training configuration is tf-keras's, and
one that names Larq's optimizers (Bop, CaseOptimizer) does not compile in
Keras 3 (one with a Keras optimizer such as Adam does); compile the loaded
model anew.

How: Keras 3 reads such a file with its legacy HDF5 loader, which looks a
layer's bare class name ("QuantConv2D") up among the registered custom
objects. This module registers, under each Larq layer name, a reader that
turns Larq's config into the kbnn layer's: Larq's quantizer and constraint
dicts (`{"module": "larq.quantizers", "class_name": "SteSign", ...}`) become
kbnn's (`kbnn.larq_config`), `groups=1`, which tf-keras writes for layers
whose Keras 3 class has no `groups`, is dropped, and `pad_values` is kbnn's
own. Anything kbnn cannot read the same way (a Larq layer or quantizer kbnn
lacks, `groups` other than 1 there) is an error naming the layer and what to
do, never a silently different model.

The bare names are Larq's layer names only; kbnn's own `.keras` files carry
"kbnn>QuantConv2D" and are unaffected.
"""

import inspect

import keras

from kbnn import constraints, layers, quantizers
from kbnn.larq_config import is_larq_module

__all__ = ["LARQ_LAYERS", "read_larq_layer_config"]

# Larq's layer names, each read as kbnn's layer of the same name.
LARQ_LAYERS = {
    name: getattr(layers, name) for name in (
        "QuantDense", "QuantConv1D", "QuantConv2D", "QuantConv3D", "QuantDepthwiseConv2D",
        "QuantSeparableConv1D", "QuantSeparableConv2D", "QuantConv2DTranspose",
        "QuantConv3DTranspose")
}
# Larq's layers that have no Keras 3 counterpart, and what to do instead.
_MISSING_LAYERS = {
    "QuantLocallyConnected1D": "Keras 3 has no LocallyConnected layers; rebuild the model "
                               "with QuantConv1D (or QuantDense) and retrain it",
    "QuantLocallyConnected2D": "Keras 3 has no LocallyConnected layers; rebuild the model "
                               "with QuantConv2D (or QuantDense) and retrain it",
}


# Arguments that tf-keras writes for a separable convolution (inherited from its
# Conv base) but never uses: its kernels are the depthwise and pointwise ones.
_UNUSED_BY_TF_KERAS = {
    "QuantSeparableConv1D": ("kernel_initializer", "kernel_regularizer", "kernel_constraint"),
    "QuantSeparableConv2D": ("kernel_initializer", "kernel_regularizer", "kernel_constraint"),
}


def _keras_parent(cls):
    return next(base for base in cls.__mro__ if base.__module__.startswith("keras."))


def read_larq_layer_config(class_name, config):
    """kbnn's layer for a Larq layer's class name and tf-keras config.

    >>> layer = kbnn.larq_files.read_larq_layer_config("QuantDepthwiseConv2D", {
    ...     "kernel_size": 3, "groups": 1, "pad_values": 1.0, "padding": "same",
    ...     "depthwise_quantizer": {"module": "larq.quantizers", "class_name": "SteSign",
    ...                             "config": {"clip_value": 1.0}}})
    >>> type(layer).__name__, layer.pad_values
    ('QuantDepthwiseConv2D', 1.0)
    """
    layer_name = config.get("name", "?")
    where = f"Larq layer {class_name} {layer_name!r}"
    if class_name in _MISSING_LAYERS:
        raise ValueError(f"{where}: kbnn cannot load it: {_MISSING_LAYERS[class_name]}.")
    cls = LARQ_LAYERS[class_name]
    config = dict(config)
    for key in _UNUSED_BY_TF_KERAS.get(class_name, ()):
        config.pop(key, None)
    parent = _keras_parent(cls)
    if "groups" in config and "groups" not in inspect.signature(parent.__init__).parameters:
        groups = config.pop("groups")
        if groups not in (1, None):
            raise ValueError(f"{where} has groups={groups}, which Keras 3's {parent.__name__} "
                             f"cannot compute; rebuild it without groups.")
    # Read here, not in the layer's constructor, so that an error names the layer
    # (Keras wraps one raised in `from_config` in a dump of the whole config).
    readers = {"_constraint": constraints.get, "_quantizer": quantizers.get}
    for key, value in config.items():
        read = next((f for suffix, f in readers.items() if key.endswith(suffix)), None)
        if read is not None and is_larq_module(value):
            try:
                config[key] = read(value)
            except ValueError as error:
                raise ValueError(f"{where}, {key}: {error}") from error
    try:
        return cls.from_config(config)
    except (ValueError, TypeError) as error:
        # Keras prefixes the cause with a dump of the whole config; keep the cause.
        cause = str(error).split("Exception encountered:", 1)[-1].strip()
        raise ValueError(f"{where}: kbnn cannot read its config: {cause}") from error


class _LarqLayerReader:
    """What Keras's legacy loader finds under a Larq layer name: reads its config."""

    def __init__(self, class_name):
        self.class_name = class_name

    def from_config(self, config):
        return read_larq_layer_config(self.class_name, config)


def _register():
    registry = keras.saving.get_custom_objects()
    for name in (*LARQ_LAYERS, *_MISSING_LAYERS):
        registry.setdefault(name, _LarqLayerReader(name))


_register()
