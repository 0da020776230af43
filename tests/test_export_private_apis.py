"""The one private API the exporter uses, pinned: Keras' `Functional._run_through_graph`.

`kbnn.export.graph.run_functional` is its only caller. This test fails, naming
the versions it was checked on, if a Keras release drops or changes it.
"""

import importlib.metadata

import keras
import numpy as np

from kbnn.export.graph import run_functional

# Checked on tensorflow 2.21.0, keras 3.15.1, ai-edge-litert 2.3.0 (LiteRT needs no
# private API: operator names are read from the flatbuffer's schema).
CHECKED = "keras 3.15"


def test_run_through_graph_replaces_each_layer_and_keeps_the_wiring():
    installed = importlib.metadata.version("keras")
    assert hasattr(keras.Model, "_run_through_graph") or hasattr(
        keras.src.models.functional.Functional, "_run_through_graph"), (
        f"keras {installed} has no Functional._run_through_graph (checked on {CHECKED}); "
        f"kbnn.export.graph.run_functional needs another way to walk a branching model.")
    inputs = keras.Input((3,))
    doubled = keras.layers.Rescaling(2.0, name="double")(inputs)
    outputs = keras.layers.Add(name="add")([doubled, inputs])   # a branch: 2x + x
    model = keras.Model(inputs, outputs)
    seen = []

    def operation_fn(layer):
        seen.append(layer.name)
        if layer.name == "double":
            return lambda x, **kwargs: x * 10.0        # replaced: 10x + x
        return layer

    x = np.array([[1.0, 2.0, 3.0]], np.float32)
    y = np.asarray(run_functional(model, x, operation_fn))
    np.testing.assert_allclose(y, 11 * x, err_msg=(
        f"Functional._run_through_graph behaves differently in keras {installed} "
        f"(checked on {CHECKED})"))
    assert seen == ["double", "add"], f"traversal order changed in keras {installed}"
