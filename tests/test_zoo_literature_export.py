"""Every Larq Zoo architecture exports packed (builtin ops only) and agrees with Keras."""

import keras
import numpy as np
import pytest

import kbnn.export
from kbnn import zoo
from kbnn.export import verify


@pytest.fixture(scope="module")
def images():
    """64 random 224x224x3 inputs, as issue 19 asks (the models take raw pixels in [0, 1]
    here; an untrained model's outputs are as good a check of the export as any)."""
    return np.random.default_rng(0).random((64, 224, 224, 3), np.float32)


@pytest.mark.parametrize("name", sorted(zoo.LITERATURE_BUILDERS))
def test_literature_model_exports_packed_and_agrees(name, images):
    keras.utils.set_random_seed(0)
    model = zoo.LITERATURE_BUILDERS[name]()
    result = kbnn.export.export_tflite(model)
    assert verify.custom_ops(result.tflite) == []
    binary = sum(plan.binary_weights for plan in result.plans)
    assert binary > 0 and sum(plan.packed_bits for plan in result.plans) == binary
    # compare raises on any disagreement but a boundary tie: a binary layer's input within
    # float rounding of zero, which untrained models (birealnet: 11 of 64) often have.
    # XNOR-Net's are all ties: its kernels are sign(w) times a channel's scale, so a
    # binary convolution sums +-scale terms. LiteRT sums the +-1 levels exactly and then
    # scales, so an even sum is exactly 0 (sign +1); Keras rounds as it adds +-scale and
    # lands within 3e-8 of 0 on either side (seed 1: 520 of 43,264 units flip at the
    # second binary convolution). Untrained, its first binary convolution sees ReLU
    # outputs (all signs +1), so every image meets the same flips.
    check = verify.compare(model, result.tflite, images)
    assert check.samples == len(images)


def test_channel_slice_exports_as_a_builtin_slice():
    """MeliusNet's ChannelSlice (kbnn.layers) passes through the exporter."""
    inputs = keras.Input((4, 4, 6))
    x = keras.layers.Conv2D(6, 1)(inputs)
    outputs = keras.layers.Add()([kbnn.layers.ChannelSlice(0, 3)(x),
                                  kbnn.layers.ChannelSlice(3, 6)(x)])
    model = keras.Model(inputs, outputs)
    tflite = kbnn.export.to_tflite(model)
    assert "STRIDED_SLICE" in verify.op_names(tflite)
    inputs = np.random.default_rng(1).normal(size=(3, 4, 4, 6)).astype("float32")
    np.testing.assert_allclose(verify.run_tflite(tflite, inputs), model.predict(inputs, verbose=0),
                               rtol=1e-5, atol=1e-6)


def test_weights_of_pass_through_layers_are_stored_as_constants():
    """PReLU's alpha (Real-to-Binary Net) is a constant of the file, not a resource
    variable that nothing initializes (LiteRT read garbage: NaN, or refused to run)."""
    inputs = keras.Input((5, 5, 3))
    x = keras.layers.Conv2D(4, 3)(inputs)
    outputs = keras.layers.PReLU(shared_axes=[1, 2],
                                 alpha_initializer=keras.initializers.Constant(0.3))(x)
    model = keras.Model(inputs, outputs)
    tflite = kbnn.export.to_tflite(model)
    assert verify.op_names(tflite) == ["CONV_2D", "PRELU"]
    inputs = np.random.default_rng(2).normal(size=(4, 5, 5, 3)).astype("float32")
    np.testing.assert_allclose(verify.run_tflite(tflite, inputs), model.predict(inputs, verbose=0),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["xnornet", "dorefanet"])
def test_input_dependent_literature_models_agree_top1(name, images):
    """XNOR-Net and DoReFa-Net untrained give every image the same outputs (their binary
    layers first see ReLU outputs: all signs +1), so the test above judges no top-1. With
    random batch-norm statistics, as trained models have, the signs depend on the image
    and top-1 (of the logits) must agree on every input whose Keras margin decides it."""
    keras.utils.set_random_seed(1)
    model = zoo.LITERATURE_BUILDERS[name]()
    rng = np.random.default_rng(1)
    draw = {"gamma": lambda n: rng.uniform(0.5, 1.5, n), "beta": lambda n: rng.normal(0, 0.5, n),
            "moving_mean": lambda n: rng.normal(0, 0.5, n),
            "moving_variance": lambda n: rng.uniform(0.5, 1.5, n)}
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            for weight in layer.weights:
                weight.assign(draw[weight.name](weight.shape).astype("float32"))
    logits = keras.Model(model.inputs, model.layers[-2].output)  # the softmax's input:
    result = kbnn.export.export_tflite(logits)  # probabilities near 1/1000 decide no top-1
    check = verify.compare(logits, result.tflite, images[:32])
    assert check.judged - check.boundary_ties >= 8, check
    assert check.top1_agreement == 1.0, check
