import keras
import numpy as np
import pytest

import kbnn
from kbnn import zoo
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
