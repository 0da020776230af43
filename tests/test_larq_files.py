"""Model files saved by Larq itself load into kbnn with the same predictions.

The fixtures were written by Larq itself (tests/fixtures/make_larq_model_fixtures.py
says how): tests/fixtures/larq_models/ by Larq 0.14 on tf-keras 2.16,
tests/fixtures/larq013_models/ by Larq 0.13.3 on tf-keras 2.15, and
tests/fixtures/larq013_tf212_models/ by Larq 0.13.3 on TensorFlow 2.12's Keras 2.12,
whose files are older still (no "module" in serialized objects, shared_object_id, no
build_config).
"""

import doctest
import json
import pathlib
import shutil

import h5py
import keras
import numpy as np
import pytest

import kbnn
from kbnn import layers, quantizers

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "larq_models"
# The same models saved by each Larq release, its directory of fixtures.
SAVED_BY = {"larq 0.14": FIXTURES, "larq 0.13": FIXTURES.parent / "larq013_models",
            "larq 0.13 tf 2.12": FIXTURES.parent / "larq013_tf212_models"}
BINARY = dict(kernel_quantizer="ste_sign", kernel_constraint="weight_clip", use_bias=False)


def plain_bnn():
    """kbnn's build of make_larq_model_fixtures.plain_bnn."""
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        layers.QuantConv2D(8, 3, **BINARY),
        keras.layers.BatchNormalization(scale=False),
        layers.QuantConv2D(8, 3, padding="same", input_quantizer="ste_sign", **BINARY),
        keras.layers.MaxPooling2D(2),
        keras.layers.BatchNormalization(scale=False),
        keras.layers.Flatten(),
        layers.QuantDense(10, input_quantizer="ste_sign", **BINARY),
        keras.layers.BatchNormalization(scale=False),
        keras.layers.Activation("softmax"),
    ])


def shortcut_bnn():
    """kbnn's build of make_larq_model_fixtures.shortcut_bnn."""
    inputs = keras.Input((8, 8, 3))
    x = layers.QuantConv2D(
        8, 3, padding="same", pad_values=1.0, use_bias=False,
        input_quantizer=quantizers.SteSign(clip_value=1.25),
        kernel_quantizer="magnitude_aware_sign", kernel_constraint="weight_clip")(inputs)
    shortcut = keras.layers.BatchNormalization()(x)
    x = layers.QuantDepthwiseConv2D(
        3, padding="same", pad_values=1.0, use_bias=False, input_quantizer="approx_sign",
        depthwise_quantizer="ste_sign", depthwise_constraint="weight_clip")(shortcut)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Add()([x, shortcut])
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = layers.QuantDense(10, input_quantizer=quantizers.SteSign(clip_value=1.25),
                          kernel_quantizer="magnitude_aware_sign")(x)
    outputs = keras.layers.Activation("softmax")(x)
    return keras.Model(inputs, outputs)


BUILDERS = {"plain_bnn": plain_bnn, "shortcut_bnn": shortcut_bnn}
# Larq's other layers and quantizers: separable 1D/2D, transposed 2D/3D, Conv1D/3D with
# pad_values; ste_heaviside, swish_sign, SteTern, DoReFa, NoOp.
MORE = ["more_2d_layers", "more_1d_3d_layers"]


def assert_predicts_as_larq(model, name, fixtures=FIXTURES):
    larq = np.load(fixtures / f"{name}.npz")
    logits = keras.Model(model.inputs, model.layers[-1].input).predict(larq["inputs"], verbose=0)
    predictions = model.predict(larq["inputs"], verbose=0)
    tolerance = 1e-5 * np.abs(larq["logits"]).max()
    assert np.abs(logits - larq["logits"]).max() <= tolerance
    assert np.abs(predictions - larq["predictions"]).max() <= 1e-5
    np.testing.assert_array_equal(predictions.argmax(-1), larq["predictions"].argmax(-1))


@pytest.mark.parametrize("larq", sorted(SAVED_BY))
@pytest.mark.parametrize("name", sorted(BUILDERS) + MORE)
def test_keras_load_model_reads_a_larq_model_file(name, larq):
    model = keras.models.load_model(SAVED_BY[larq] / f"{name}.h5", compile=False)
    assert_predicts_as_larq(model, name, SAVED_BY[larq])
    if name in BUILDERS:
        built = BUILDERS[name]()
        assert [type(layer) for layer in model.layers] == [type(layer) for layer in built.layers]


def test_larq_options_become_kbnn_ones():
    model = keras.models.load_model(FIXTURES / "shortcut_bnn.h5", compile=False)
    conv, depthwise = (layer for layer in model.layers
                       if isinstance(layer, (layers.QuantConv2D, layers.QuantDepthwiseConv2D)))
    assert conv.pad_values == 1.0 and depthwise.pad_values == 1.0
    assert type(conv.input_quantizer) is quantizers.SteSign
    assert conv.input_quantizer.clip_value == 1.25
    assert type(conv.kernel_quantizer) is quantizers.MagnitudeAwareSign
    assert type(depthwise.input_quantizer) is quantizers.ApproxSign
    assert type(depthwise.depthwise_constraint) is kbnn.constraints.WeightClip


@pytest.mark.parametrize("larq", sorted(SAVED_BY))
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_larq_weights_file_loads_into_the_kbnn_built_model(name, larq):
    model = BUILDERS[name]()
    model.load_weights(SAVED_BY[larq] / f"{name}_weights.h5")
    assert_predicts_as_larq(model, name, SAVED_BY[larq])


@pytest.mark.parametrize("larq", sorted(SAVED_BY))
@pytest.mark.parametrize("name", MORE)
def test_larq_weights_file_loads_into_a_model_of_the_same_layers(name, larq):
    model = keras.models.load_model(SAVED_BY[larq] / f"{name}.h5", compile=False)
    model.set_weights([np.zeros_like(weight) for weight in model.get_weights()])
    model.load_weights(SAVED_BY[larq] / f"{name}_weights.h5")
    assert_predicts_as_larq(model, name, SAVED_BY[larq])


def test_a_loaded_larq_model_saves_and_reloads_as_a_keras_file(tmp_path):
    model = keras.models.load_model(FIXTURES / "shortcut_bnn.h5", compile=False)
    model.save(tmp_path / "converted.keras")
    assert_predicts_as_larq(keras.models.load_model(tmp_path / "converted.keras"), "shortcut_bnn")


def edited_copy(tmp_path, edit):
    """A copy of shortcut_bnn.h5 whose model config `edit(layers)` has changed."""
    path = tmp_path / "edited.h5"
    shutil.copy(FIXTURES / "shortcut_bnn.h5", path)
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        edit({layer["config"]["name"]: layer for layer in config["config"]["layers"]})
        f.attrs["model_config"] = json.dumps(config)
    return path


def test_older_tf_keras_dicts_without_module_load_the_same(tmp_path):
    # tf-keras before 2.13 wrote {"class_name", "config"} only.
    def strip_modules(layers_by_name):
        for layer in layers_by_name.values():
            for value in layer["config"].values():
                if isinstance(value, dict) and str(value.get("module")).startswith("larq."):
                    del value["module"], value["registered_name"]

    path = edited_copy(tmp_path, strip_modules)
    with h5py.File(path, "r") as f:
        assert "larq." not in f.attrs["model_config"]
    assert_predicts_as_larq(keras.models.load_model(path, compile=False), "shortcut_bnn")


def rename_quantizer(layers_by_name):
    quantizer = layers_by_name["quant_depthwise_conv2d"]["config"]["input_quantizer"]
    quantizer["class_name"] = "FancySign"


def set_groups(layers_by_name):
    layers_by_name["quant_depthwise_conv2d"]["config"]["groups"] = 2


def locally_connected(layers_by_name):
    layers_by_name["quant_dense"]["class_name"] = "QuantLocallyConnected2D"


def unknown_argument(layers_by_name):
    layers_by_name["quant_dense"]["config"]["fancy_option"] = True


@pytest.mark.parametrize("edit, message", [
    (rename_quantizer, r"QuantDepthwiseConv2D 'quant_depthwise_conv2d'.*'FancySign'.*no kbnn"),
    (set_groups, r"QuantDepthwiseConv2D 'quant_depthwise_conv2d' has groups=2"),
    (locally_connected, r"QuantLocallyConnected2D 'quant_dense'.*no LocallyConnected"),
    (unknown_argument, r"^Larq layer QuantDense 'quant_dense': kbnn cannot read its config: "
                       r"Unrecognized keyword arguments.*fancy_option"),
])
def test_what_kbnn_lacks_is_an_error_naming_the_layer(tmp_path, edit, message):
    with pytest.raises(ValueError, match=message):
        keras.models.load_model(edited_copy(tmp_path, edit), compile=False)


def test_docstring_examples(monkeypatch):
    monkeypatch.chdir(pathlib.Path(__file__).parents[1])  # they name the fixtures from the root
    result = doctest.testmod(kbnn.larq_files, extraglobs={"kbnn": kbnn})
    assert result.attempted > 0 and result.failed == 0
