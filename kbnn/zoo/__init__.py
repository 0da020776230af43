"""Model zoo: architecture builders, each declared once as a spec, and released weights.

>>> from kbnn.zoo import bnn_mlp, float_mlp, bnn_cnn, float_cnn, list_models
>>> model = bnn_mlp(hidden_units=(1024,), binarization="deterministic")
>>> model.input_shape, model.output_shape
((None, 28, 28, 1), (None, 10))
>>> pretrained = bnn_mlp(hidden_units=(128,), weights="fashion_mnist")  # released weights

`BUILDERS` maps each builder's name to the builder; `BUILDERS[name].spec`
declares its arguments (`kbnn.zoo.spec`). The Fashion-MNIST models are in
`kbnn.zoo.fashion_mnist`. Released weights are NAME.keras files with NAME.json
holding the builder arguments and measured metrics, read from
`$KBNN_MODELS_DIR`, else from the copies installed with the package, else from
the repository's `saved_models/` (`kbnn.zoo.weights`); `list_models()` lists them.
The Larq Zoo architectures (`quicknet`, `birealnet`, ...) are in
`kbnn.zoo.literature`, listed in `LITERATURE_BUILDERS`.
"""

from kbnn.zoo.fashion_mnist import BUILDERS, bnn_cnn, bnn_mlp, float_cnn, float_mlp
from kbnn.zoo.literature import (LITERATURE_BUILDERS, binary_alexnet, binary_densenet28,
                                 binary_densenet37, binary_densenet37_dilated,
                                 binary_densenet45, binary_resnet_e18, birealnet, dorefanet,
                                 meliusnet22, quicknet, quicknet_large, quicknet_small,
                                 real_to_binary_net, xnornet)
from kbnn.zoo.weights import list_models, models_dir, models_dirs

__all__ = ["bnn_mlp", "float_mlp", "bnn_cnn", "float_cnn", "list_models", "models_dir",
           "models_dirs", "BUILDERS", "LITERATURE_BUILDERS", *LITERATURE_BUILDERS]
