"""The Larq Zoo architectures: Larq Zoo's parameter counts, shapes, and its weights files."""

import doctest
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf

import kbnn
from kbnn import zoo
from kbnn.zoo import literature

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "larq_zoo"

# count_params() and the trainable count of Larq Zoo 2.4.0's models at 224x224x3 and
# 1000 classes (measured with larq-zoo 2.4.0, larq 0.14.0, tf-keras 2.16).
LARQ_ZOO_COUNTS = {
    "quicknet_small": (12_664_344, 12_652_504),
    "quicknet": (13_243_720, 13_230_024),
    "quicknet_large": (23_359_304, 23_338_184),
    "birealnet": (11_699_112, 11_689_512),
    "binary_resnet_e18": (11_699_368, 11_689_640),
    "binary_densenet28": (5_150_504, 5_131_496),
    "binary_densenet37": (8_734_120, 8_702_248),
    "binary_densenet37_dilated": (8_734_120, 8_702_248),
    "binary_densenet45": (13_939_240, 13_889_512),
    "meliusnet22": (6_969_672, 6_944_584),
    "real_to_binary_net": (11_995_624, 11_986_920),
    "binary_alexnet": (61_859_192, 61_838_248),
    "xnornet": (62_396_768, 62_377_440),
    "dorefanet": (62_403_912, 62_384_968),
}

# Larq Zoo's output shapes with include_top=False at 64x64x3 (224x224x3 for XNOR-Net,
# whose unpadded 6x6 convolution needs about that).
FEATURE_SHAPES = {
    "quicknet_small": (2, 2, 512), "quicknet": (2, 2, 512), "quicknet_large": (2, 2, 512),
    "birealnet": (2, 2, 512), "binary_resnet_e18": (2, 2, 512),
    "binary_densenet28": (2, 2, 576), "binary_densenet37": (2, 2, 640),
    "binary_densenet37_dilated": (8, 8, 640), "binary_densenet45": (2, 2, 800),
    "meliusnet22": (2, 2, 512), "real_to_binary_net": (2, 2, 512),
    "binary_alexnet": (1, 1, 256), "xnornet": (1, 1, 4096), "dorefanet": (1, 1, 256),
}


@pytest.fixture(autouse=True)
def _fresh_session():
    yield
    keras.backend.clear_session()  # the 60M-parameter models are not kept alive


def _trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def test_every_larq_zoo_architecture_has_a_builder():
    assert set(literature.LITERATURE_BUILDERS) == set(LARQ_ZOO_COUNTS)
    for name, build in literature.LITERATURE_BUILDERS.items():
        assert getattr(zoo, name) is build and name in zoo.__all__
        assert list(build.spec.arguments) == ["input_shape", "num_classes", "include_top"]
        assert build.spec.arguments["input_shape"].default == (224, 224, 3)
        assert build.spec.arguments["num_classes"].default == 1000
    # The training CLI's builders stay the Fashion-MNIST ones (logits, 28x28x1).
    assert not set(literature.LITERATURE_BUILDERS) & set(zoo.BUILDERS)


@pytest.mark.parametrize("name", sorted(LARQ_ZOO_COUNTS))
def test_parameter_counts_are_larq_zoos(name):
    model = literature.LITERATURE_BUILDERS[name]()
    assert model.input_shape == (None, 224, 224, 3) and model.output_shape == (None, 1000)
    assert (model.count_params(), _trainable(model)) == LARQ_ZOO_COUNTS[name]


@pytest.mark.parametrize("name", sorted(FEATURE_SHAPES))
def test_small_inputs_and_no_top(name):
    build = literature.LITERATURE_BUILDERS[name]
    size = 224 if name == "xnornet" else 64
    features = build(input_shape=(size, size, 3), include_top=False)
    assert features.output_shape == (None, *FEATURE_SHAPES[name])
    if name == "xnornet":
        return
    model = build(input_shape=(64, 64, 3), num_classes=10)
    probabilities = model.predict(np.random.default_rng(0).normal(size=(2, 64, 64, 3)),
                                  verbose=0)
    assert probabilities.shape == (2, 10)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)


def test_bad_input_shape_names_the_argument():
    with pytest.raises(ValueError, match=r"input_shape=\(224, 224\): give \(height, width, "
                                         r"channels\)"):
        zoo.quicknet(input_shape=(224, 224))


@pytest.mark.parametrize("name", ["quicknet", "meliusnet22"])
def test_weights_saved_by_larq_zoo_load_with_identical_predictions(name):
    # Made by tests/fixtures/make_larq_zoo_fixtures.py with Larq Zoo itself: random
    # weights, perturbed batch-norm statistics, Larq Zoo's model.save_weights(".h5").
    expected = np.load(FIXTURES / f"{name}.npz")
    model = literature.LITERATURE_BUILDERS[name](
        input_shape=tuple(int(d) for d in expected["input_shape"]),
        num_classes=int(expected["num_classes"]), weights=str(FIXTURES / f"{name}.h5"))
    logits = keras.Model(model.inputs, model.layers[-1].input)
    # Random weights saturate the softmax, so the logits are compared too: a weight in
    # the wrong place or QuickNet's +1 padding done as zeros changes them far more.
    reference = expected["logits"]
    np.testing.assert_allclose(logits.predict(expected["inputs"], verbose=0), reference,
                               rtol=0, atol=1e-5 * np.abs(reference).max())
    probabilities = model.predict(expected["inputs"], verbose=0)
    np.testing.assert_allclose(probabilities, expected["predictions"], rtol=0, atol=1e-4)
    assert (probabilities.argmax(-1) == expected["predictions"].argmax(-1)).all()


def test_a_weights_file_of_another_architecture_is_refused():
    with pytest.raises(ValueError, match=r"Layer count mismatch|expected \d+ layers"):
        zoo.binary_densenet28(input_shape=(64, 64, 3), num_classes=10,
                              weights=str(FIXTURES / "meliusnet22.h5"))


def test_literature_pieces_round_trip_through_a_keras_file(tmp_path):
    # The pieces the literature models add to Keras' and kbnn's layers, in a small model.
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False,
                                     depthwise_initializer=literature.BlurPool(),
                                     trainable=False)(inputs)
    halves = [literature.ChannelSlice(0, 2)(x), literature.ChannelSlice(2, 4)(x)]
    x = keras.layers.Concatenate()([
        kbnn.layers.QuantConv2D(3, 3, padding="same", pad_values=1.0,
                                input_quantizer="ste_sign",
                                kernel_quantizer=literature.XnorWeightScale())(halves[0]),
        kbnn.layers.QuantConv2D(3, 3, padding="same",
                                kernel_quantizer=literature.MagnitudeAwareSignUnclipped())(
            halves[1])])
    model = keras.Model(inputs, x)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    x = np.random.default_rng(1).normal(size=(2, 8, 8, 4)).astype("float32")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert [type(layer.kernel_quantizer) for layer in loaded.layers[-3:-1]] == [
        literature.XnorWeightScale, literature.MagnitudeAwareSignUnclipped]
    np.testing.assert_array_equal(loaded.layers[1].kernel.numpy(),
                                  model.layers[1].kernel.numpy())


def test_quicknet_pads_binary_convolutions_with_one():
    model = zoo.quicknet(input_shape=(64, 64, 3), include_top=False)
    binary = [layer for layer in model.layers if isinstance(layer, kbnn.layers.QuantConv2D)
              and layer.input_quantizer is not None]
    assert len(binary) == 16
    assert all(layer.pad_values == 1.0 and layer.input_quantizer.clip_value == 1.25
               for layer in binary)
    blur = [layer for layer in model.layers if type(layer) is keras.layers.DepthwiseConv2D]
    assert len(blur) == 3 and not any(layer.trainable for layer in blur)
    np.testing.assert_allclose(blur[0].kernel.numpy()[:, :, 0, 0],
                               np.outer([1, 2, 1], [1, 2, 1]) / 16)


def test_xnor_weight_scale():
    q = literature.XnorWeightScale()
    w = tf.constant([[[[0.5, -3.0]], [[-0.5, 0.25]]]])  # (1, 2, 1, 2): two output channels
    # Clipped to [-1, 1] first: channel 1's scale is mean(1, 0.25), not mean(3, 0.25).
    np.testing.assert_allclose(q(w).numpy().reshape(2, 2), [[0.5, -0.625], [-0.5, 0.625]])
    low, high = q.levels(w)
    np.testing.assert_allclose(high.numpy(), [0.5, 0.625])
    np.testing.assert_allclose(low.numpy(), [-0.5, -0.625])
    assert kbnn.quantizers.is_binary(q)


def test_magnitude_aware_sign_unclipped():
    q = literature.MagnitudeAwareSignUnclipped()
    w = tf.Variable([[3.0, -1.0], [0.0, -2.0]])
    with tf.GradientTape() as tape:
        y = q(w)
    np.testing.assert_allclose(y.numpy(), [[1.5, -1.5], [1.5, -1.5]])  # one scale, sign(0)=+1
    # Identity gradient, also far outside [-1, 1]; the scale is not differentiated.
    np.testing.assert_allclose(tape.gradient(y, w).numpy(), np.ones((2, 2)))
    np.testing.assert_allclose(q.levels(w)[1].numpy(), [1.5, 1.5])


def test_larq_zoo_weights_addresses():
    for name in literature.LITERATURE_BUILDERS:
        for include_top in (True, False):
            url = literature.larq_zoo_weights(name, include_top=include_top)
            assert url.startswith("https://github.com/larq/zoo/releases/download/")
            path, digest = url.split("#sha256=")
            assert len(digest) == 64 and int(digest, 16) >= 0
            assert path.endswith("_notop.h5") != include_top
    with pytest.raises(ValueError, match=r"No Larq Zoo weights for 'quiknet'; builders: "):
        literature.larq_zoo_weights("quiknet")


def test_docstring_examples():
    result = doctest.testmod(literature, extraglobs={"kbnn": kbnn, "np": np},
                             optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
