"""kbnn: binary neural networks on Keras 3.

>>> import keras, kbnn
>>> model = keras.Sequential([
...     keras.Input((784,)),
...     kbnn.layers.QuantDense(128, kernel_quantizer="ste_sign",
...                            kernel_constraint="weight_clip"),
... ])
>>> kbnn.summary(model, print_fn=None).memory_bytes
13056.0

Modules: `quantizers`, `layers`, `constraints`, `activations`, `math`, `context`,
`optimizers`, `callbacks`, `metrics`, `summary`, `data` (Fashion-MNIST), `zoo`
(architectures and released weights), `distill` (knowledge distillation), `larq_files`
(Larq's `.h5` model files load with `keras.models.load_model`), `exact_product` (binary
layers' products: exact in bfloat16, held as int8 for the backward pass), `quantizer_ops`
(the sign quantizers' training step in C, one pass each);
`kbnn.export` (TFLite export) and `kbnn.runtime` (kbnn's LiteRT delegate), each imported
on its own, and `python -m kbnn.train`.
"""

from kbnn.startup import quiet_tensorflow_startup as _quiet_startup

_quiet_startup()  # first: `python -m kbnn.train` imports this before its __main__

import keras as _keras  # noqa: E402

if _keras.backend.backend() != "tensorflow":
    raise ImportError(
        f"kbnn needs the TensorFlow backend of Keras (its quantizers use "
        f"tf.custom_gradient), but KERAS_BACKEND is {_keras.backend.backend()!r}. "
        f"Set KERAS_BACKEND=tensorflow before importing keras."
    )

from kbnn import (  # noqa: E402
    activations, callbacks, constraints, context, data, distill, exact_product, larq_files,
    layers, math, metrics, optimizers, quantizer_ops, quantizers, zoo,
)
from kbnn.summary import ModelSummary, summary  # noqa: E402

__version__ = "0.1.0"

__all__ = ["activations", "callbacks", "constraints", "context", "data", "distill",
           "exact_product", "larq_files", "layers",
           "math", "metrics", "optimizers", "quantizers", "zoo", "summary",
           "ModelSummary"]
