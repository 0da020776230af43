import argparse
import hashlib
import inspect

import keras
import numpy as np
import pytest

import kbnn
from kbnn import zoo
from kbnn.zoo.spec import Argument, Integer, add_cli_options, builder, cli_model_args
from kbnn.layers import QuantConv2D, QuantDense
from kbnn.train import train_and_save


def quant_layers(model):
    return [l for l in model.layers if isinstance(l, (QuantDense, QuantConv2D))]


@pytest.mark.parametrize("binarization", ["deterministic", "stochastic"])
def test_bnn_mlp_follows_binarynet(binarization):
    model = zoo.bnn_mlp((64, 32), binarization=binarization, seed=3)
    assert model.input_shape == (None, 28, 28, 1) and model.output_shape == (None, 10)
    first, *rest = quant_layers(model)
    assert first.input_quantizer is None  # real-valued pixels
    expected = (kbnn.quantizers.StochasticSign if binarization == "stochastic"
                else kbnn.quantizers.SteSign)
    assert all(type(l.input_quantizer) is expected for l in rest)
    for layer in [first, *rest]:
        assert isinstance(layer.kernel_quantizer, kbnn.quantizers.SteSign)
        assert isinstance(layer.kernel_constraint, kbnn.constraints.WeightClip)
        following = model.layers[model.layers.index(layer) + 1]
        assert isinstance(following, keras.layers.BatchNormalization)
    s = kbnn.summary(model, print_fn=None)
    assert s.params_1bit == 784 * 64 + 64 * 32 + 32 * 10
    assert s.params_32bit == 4 * (64 + 32 + 10)


def test_float_twins_and_cnn_sizes():
    assert zoo.float_mlp((128,)).count_params() == 784 * 128 + 4 * 128 + 128 * 10 + 10
    cnn = zoo.bnn_cnn()
    assert cnn.count_params() < 1_500_000
    assert quant_layers(cnn)[0].input_quantizer is None
    assert zoo.float_cnn().output_shape == (None, 10)
    with pytest.raises(ValueError, match="binarization='sign'.*deterministic, stochastic"):
        zoo.bnn_mlp(binarization="sign")
    for builder in (zoo.bnn_mlp, zoo.float_mlp):
        with pytest.raises(ValueError, match=r"hidden_units=\(\): give one or more positive"):
            builder(())
    with pytest.raises(ValueError, match=r"filters=\(32, 0\): give one or more positive"):
        zoo.bnn_cnn(filters=(32, 0))
    assert zoo.bnn_mlp(np.array([16])).count_params() > 0  # numpy widths are fine


def test_bnn_cnn_shortcuts_add_the_real_valued_input_without_weights():
    plain = zoo.bnn_cnn(filters=(4, 8), dense_units=16)
    model = zoo.bnn_cnn(filters=(4, 8), dense_units=16, shortcuts=True)
    assert [w.shape for w in model.weights] == [w.shape for w in plain.weights]
    # Its own default name, so `kbnn.train` does not overwrite the plain model's files.
    assert (model.name, plain.name) == ("bnn_cnn_shortcuts_deterministic",
                                        "bnn_cnn_deterministic")
    model.set_weights(plain.get_weights())
    # Each binary convolution but the first adds its (pooled, widened) input.
    adds = [l for l in model.layers if isinstance(l, keras.layers.Add)]
    assert len(adds) == 3
    x = np.random.default_rng(0).random((4, 28, 28, 1)).astype("float32")
    conv = quant_layers(model)[1]  # block 1, conv 2: 4 -> 4 channels, pooled
    bn_out, shortcut = adds[0].input
    probe = keras.Model(model.inputs, [conv.input, bn_out, adds[0].output])
    conv_in, bn_value, total = probe.predict(x, verbose=0)
    pooled = conv_in.reshape(4, 14, 2, 14, 2, 4).mean(axis=(2, 4))
    np.testing.assert_allclose(total, bn_value + pooled, rtol=1e-5, atol=1e-5)
    widen = keras.Model(model.inputs, [adds[1].input[1], adds[0].output])
    widened, before = widen.predict(x, verbose=0)
    np.testing.assert_array_equal(widened, np.concatenate([before, before], axis=-1))
    assert not np.allclose(model.predict(x, verbose=0), plain.predict(x, verbose=0))
    with pytest.raises(ValueError, match=r"filters=\(4, 6\) with shortcuts=True: .*6 is not "
                       r"a multiple of 4"):
        zoo.bnn_cnn(filters=(4, 6), shortcuts=True)


def test_cnn_defaults_are_the_released_architectures():
    # The builders' defaults load the released CNNs without arguments; shortcuts=True
    # picks the released shortcut model.
    for builder, kwargs, name in ((zoo.bnn_cnn, {}, "bnn_cnn_deterministic"),
                                  (zoo.bnn_cnn, {"shortcuts": True},
                                   "bnn_cnn_shortcuts_deterministic"),
                                  (zoo.float_cnn, {}, "float_cnn")):
        model = builder(weights="fashion_mnist", **kwargs)
        released = keras.models.load_model(zoo.models_dir() / f"{name}.keras")
        assert len(model.get_weights()) == len(released.get_weights())
        for mine, theirs in zip(model.get_weights(), released.get_weights()):
            np.testing.assert_array_equal(mine, theirs)


def test_released_weights_load_by_configuration(tmp_path, tiny_fashion_mnist, monkeypatch):
    monkeypatch.setenv("KBNN_MODELS_DIR", str(tmp_path / "released"))
    (tmp_path / "released").mkdir()
    with pytest.raises(ValueError, match=r"No released fashion_mnist weights for "
                       r"bnn_mlp\(binarization='deterministic', hidden_units=\[16\]\)"):
        zoo.bnn_mlp((16,), weights="fashion_mnist")
    train_and_save("bnn_mlp", {"hidden_units": (16,)}, tmp_path / "released" / "tiny",
                   epochs=1, data_dir=tiny_fashion_mnist, validation_size=50, verbose=0)
    # $KBNN_MODELS_DIR comes first in the lookup; the released models stay found after it.
    assert zoo.models_dirs()[0] == tmp_path / "released"
    released = zoo.list_models()
    assert list(released)[0] == "tiny" and "bnn_mlp_1024_deterministic" in released
    assert released["tiny"] == {"builder": "bnn_mlp", "hidden_units": [16],
                                "binarization": "deterministic", "input_dropout": 0.1,
                                "dropout": 0.2}
    saved = keras.models.load_model(tmp_path / "released" / "tiny.keras")
    loaded = zoo.bnn_mlp((16,), weights="fashion_mnist")
    x = np.random.default_rng(0).random((8, 28, 28, 1)).astype("float32")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), saved.predict(x, verbose=0))
    with pytest.raises(ValueError, match=r"Released bnn_mlp models: tiny: bnn_mlp\("
                       r"binarization='deterministic', hidden_units=\[16\]\); "
                       r"bnn_mlp_1024_deterministic: bnn_mlp\(binarization='deterministic', "
                       r"hidden_units=\[1024\]\);.* \(pass those"):
        zoo.bnn_mlp((16,), binarization="stochastic", weights="fashion_mnist")


def test_weights_from_a_file_or_a_url_with_its_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    trained = zoo.bnn_mlp((16,), seed=0)
    trained.set_weights([w + 0.5 for w in trained.get_weights()])  # not the initial values
    path = tmp_path / "mlp.weights.h5"
    trained.save_weights(path)
    x = np.random.default_rng(0).random((4, 28, 28, 1)).astype("float32")
    expected = trained.predict(x, verbose=0)

    from_file = zoo.bnn_mlp((16,), weights=str(path))
    np.testing.assert_array_equal(from_file.predict(x, verbose=0), expected)

    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    from_url = zoo.bnn_mlp((16,), weights=f"{path.as_uri()}#sha256={digest}")
    np.testing.assert_array_equal(from_url.predict(x, verbose=0), expected)
    cached = tmp_path / "keras_home" / "models" / "mlp.weights.h5"  # Keras' cache convention
    assert cached.read_bytes() == path.read_bytes()
    path.unlink()  # a second call reads the cache
    again = zoo.bnn_mlp((16,), weights=f"{path.as_uri()}#sha256={digest}")
    np.testing.assert_array_equal(again.predict(x, verbose=0), expected)

    with pytest.raises(ValueError, match=r"end the URL with the file's hash, #sha256="):
        zoo.bnn_mlp((16,), weights="https://example.org/mlp.weights.h5")
    path.write_bytes(b"replaced")  # a file that is not the one hashed is refused
    with pytest.raises(ValueError, match=r"file hash does not match"):
        zoo.bnn_mlp((16,), weights=f"{path.as_uri()}#sha256={digest[::-1]}")
    with pytest.raises(ValueError, match=r"weights='imagenet': not a file\. Use None .*"
                       r"'fashion_mnist' \(released weights\)"):
        zoo.bnn_mlp((16,), weights="imagenet")


def test_each_builder_declares_its_arguments_once():
    for name, build in zoo.BUILDERS.items():
        spec = build.spec
        parameters = inspect.signature(build).parameters
        assert spec.builder == name and spec.released == ("fashion_mnist",)
        # The signature holds the defaults; every other parameter is declared.
        assert set(parameters) == set(spec.arguments) | {"weights", "name"} | (
            {"seed"} if name.startswith("bnn") else set())
        for argument in spec.arguments.values():
            assert argument.default == parameters[argument.name].default
            assert argument.help and argument.flag.startswith("--")
            assert f"{argument.name}: {argument.help}" in " ".join(build.__doc__.split())
    spec = zoo.bnn_cnn.spec
    assert spec.arguments["filters"].type is tuple and spec.arguments["shortcuts"].type is bool
    assert not spec.arguments["dropout"].architecture
    assert spec.record({"filters": np.array([8, 16])}) == {
        "filters": [8, 16], "dense_units": 256, "binarization": "deterministic",
        "dropout": 0.2, "shortcuts": False}
    assert spec.architecture({"shortcuts": True, "seed": 3}) == {
        "filters": [48, 96, 192], "dense_units": 256, "binarization": "deterministic",
        "shortcuts": True}
    # A JSON written before `shortcuts` existed reads as its default, False.
    old = {"builder": "bnn_cnn", "filters": [48, 96, 192], "dense_units": 256,
           "binarization": "deterministic", "dropout": 0.5}
    assert spec.matches(old, {}) and not spec.matches(old, {"shortcuts": True})
    assert not zoo.float_cnn.spec.matches(old, {})
    with pytest.raises(TypeError, match=r"bnn_cnn\(\) takes no argument hidden_units"):
        spec.check({"hidden_units": (8,)})
    with pytest.raises(ValueError, match=r"dense_units=0: give an integer >= 1"):
        zoo.bnn_cnn(dense_units=0)
    with pytest.raises(ValueError, match=r"dropout=1.5: give a rate in \[0, 1\)"):
        zoo.float_mlp(dropout=1.5)


def test_cli_options_come_from_the_specs():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    add_cli_options(parser, zoo.BUILDERS)
    assert "(default bnn_cnn: 48 96 192; float_cnn: 32 64 128)" in " ".join(
        parser.format_help().split())
    options = parser.parse_args(["bnn_cnn", "--filters", "8", "16", "--shortcuts",
                                 "--dropout", "0.1"])
    assert cli_model_args(options, "bnn_cnn", zoo.BUILDERS) == {
        "filters": (8, 16), "dropout": 0.1, "shortcuts": True}
    assert cli_model_args(parser.parse_args(["bnn_mlp"]), "bnn_mlp", zoo.BUILDERS) == {}
    with pytest.raises(ValueError, match=r"float_cnn does not take --shortcuts; its options: "
                       r"--filters, --dense-units, --dropout\."):
        cli_model_args(parser.parse_args(["float_cnn", "--shortcuts"]), "float_cnn",
                       zoo.BUILDERS)
    with pytest.raises(ValueError, match=r"binarization='sign'"):
        zoo.bnn_mlp.spec.check({"binarization": "sign"})


def test_a_builder_must_declare_every_parameter():
    with pytest.raises(TypeError, match=r"undeclared: \['width'\]"):
        @builder()
        def tiny(width=8, name=None):
            return keras.Sequential(name=name)
    with pytest.raises(ValueError, match=r"width=0: give an integer >= 1"):
        @builder(Argument("width", Integer(), "width."))
        def tiny_with_a_bad_default(width=0):
            return keras.Sequential()
