"""kbnn.export.lowbit: exact int8 / int4 / int2 exports and the INT4 / INT2 post-pass."""

import keras
import numpy as np
import pytest

import kbnn
import kbnn.data
from kbnn.export import ExportError, export_tflite, lowbit, verify
from kbnn.export.__main__ import main as export_main

pytest.importorskip("ai_edge_litert")
from ai_edge_litert import schema_py_generated as schema  # noqa: E402


def pixels(shape, seed=0):
    """Random images on the 1/255 grid, where the integer modes are exact."""
    return (np.random.default_rng(seed).integers(0, 256, shape) / 255).astype(np.float32)


def kernel_types(tflite):
    """{(op name, weight tensor type name)} of the file's FULLY_CONNECTED and CONV_2D."""
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(tflite, 0))
    ops = {v: k for k, v in vars(schema.BuiltinOperator).items() if k.isupper()}
    types = {v: k for k, v in vars(schema.TensorType).items() if k.isupper()}
    graph = model.subgraphs[0]
    found = set()
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        name = ops[max(code.builtinCode, code.deprecatedBuiltinCode)]
        if name in ("FULLY_CONNECTED", "CONV_2D"):
            found.add((name, types[graph.tensors[op.inputs[1]].type]))
    return found


# --- the released models: the strict check of packed, in every integer mode --------------------

RELEASED = {
    "mlp1024": (kbnn.zoo.bnn_mlp, dict(hidden_units=(1024,))),
    "cnn": (kbnn.zoo.bnn_cnn, {}),
    "cnn_shortcuts": (kbnn.zoo.bnn_cnn, dict(shortcuts=True)),
}


@pytest.mark.parametrize("name,weights", [("mlp1024", "int8"), ("mlp1024", "int4"),
                                          ("mlp1024", "int2"), ("cnn", "int2"),
                                          ("cnn_shortcuts", "int4")])
def test_released_models_are_exact(name, weights, fashion_mnist_dir):
    builder, arguments = RELEASED[name]
    model = builder(**arguments, weights="fashion_mnist")
    x, _ = kbnn.data.load_fashion_mnist("test", data_dir=fashion_mnist_dir, as_numpy=True)
    result = export_tflite(model, weights=weights)
    check = verify.compare(model, result.tflite, x[:1000], weights=weights, plans=result.plans)
    assert check.top1_agreement == 1.0 and check.judged == 1000
    assert check.boundary_ties == 0 and check.max_abs_diff < 1e-4
    stored = {"int8": "INT8", "int4": "INT4", "int2": "INT2"}[weights]
    assert ("FULLY_CONNECTED", stored) in kernel_types(result.tflite)
    if name.startswith("cnn"):   # CONV_2D has no INT4 / INT2 kernel: int8
        assert ("CONV_2D", "INT8") in kernel_types(result.tflite)


def test_released_mlp_int2_file_is_near_the_one_bit_floor():
    model = kbnn.zoo.bnn_mlp((1024,), weights="fashion_mnist")
    packed, int2 = (export_tflite(model, weights=w) for w in ("packed", "int2"))
    assert int2.floor_bytes == packed.floor_bytes == 109_904
    assert len(int2.tflite) <= 2.1 * int2.floor_bytes
    assert [p.design for p in int2.plans if p.design] == ["int2", "int2"]
    assert "runs on: ai-edge-litert 2.1.2+" in int2.report()


# --- the encodings on inputs that test their edges ----------------------------------------------


def conv_model(first_bias):
    """Real input -> binary conv (ranged feed) -> binary SAME conv (anchored feed) ->
    binary dense (unit feed), each large enough for the converter to quantize."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 4)),
        kbnn.layers.QuantConv2D(32, 3, padding="same", kernel_quantizer="ste_sign",
                                name="real_in"),
        kbnn.layers.QuantConv2D(32, 3, padding="same", kernel_quantizer="ste_sign",
                                input_quantizer="ste_sign", name="signs_in"),
        keras.layers.Flatten(),
        kbnn.layers.QuantDense(16, kernel_quantizer="ste_sign", input_quantizer="ste_sign",
                               name="dense"),
    ])
    model.get_layer("real_in").bias.assign(np.full(32, first_bias, np.float32))
    model.get_layer("signs_in").bias.assign(np.linspace(-3.5, 3.5, 32).astype(np.float32))
    return model


# A half pixel step keeps the first layer's integer sums off zero (where Keras' own float
# rounding would pick the sign); +-1000 makes every sign after it +1 or -1: inputs
# without a -1 (or a +1) still quantize exactly.
@pytest.mark.parametrize("first_bias", [0.5 / 255, 1000.0, -1000.0])
@pytest.mark.parametrize("weights", ["int8", "int2"])
def test_inputs_of_one_sign_and_pixels_stay_exact(first_bias, weights):
    model = conv_model(first_bias)
    result = export_tflite(model, weights=weights)
    feeds = {p.name: (p.design, p.feed) for p in result.plans if p.design}
    assert feeds == {"real_in": ("int8", "ranged"), "signs_in": ("int8", "anchored"),
                     "dense": (weights, "unit")}
    check = verify.compare(model, result.tflite, pixels((200, 8, 8, 4)), weights=weights)
    assert check.top1_agreement == 1.0 and check.boundary_ties == 0


def test_without_the_encoding_int8_is_not_exact(monkeypatch):
    """The encoding is what makes int8 exact: fed +-1 as they are, it is not."""
    model = conv_model(0.5 / 255)
    monkeypatch.setattr(lowbit, "encode_plans", lambda model, plans, weights: plans)
    result = export_tflite(model, weights="int8")
    with pytest.raises(verify.VerificationError, match="1/255 grid"):
        verify.compare(model, result.tflite, pixels((200, 8, 8, 4)), weights="int8")


@pytest.mark.parametrize("pad_value", [1.0, -1.0])
def test_larq_pad_values_of_one_sign_stay_exact(pad_value):
    keras.utils.set_random_seed(4)
    model = keras.Sequential([
        keras.Input((6, 7, 8)),
        kbnn.layers.QuantConv2D(32, 3, padding="same", pad_values=pad_value, strides=(2, 1),
                                kernel_quantizer="ste_sign", input_quantizer="ste_sign",
                                name="padded"),
        keras.layers.Flatten()])
    model.get_layer("padded").bias.assign(np.linspace(-2.5, 2.5, 32).astype(np.float32))
    result = export_tflite(model, weights="int8")
    (plan,) = [p for p in result.plans if p.design]
    assert (plan.feed, plan.pad_value) == ("unit", (pad_value + 1) / 2)
    x = np.random.default_rng(5).normal(size=(100, 6, 7, 8)).astype(np.float32)
    np.testing.assert_allclose(verify.run_tflite(result.tflite, x), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)


def test_pad_values_on_real_inputs_are_refused():
    model = keras.Sequential([keras.Input((6, 6, 16)), kbnn.layers.QuantConv2D(
        16, 3, padding="same", pad_values=1.0, kernel_quantizer="ste_sign", name="padded")])
    with pytest.raises(ExportError, match=r"'padded'.*pad_values=1.*--weights packed or float"):
        export_tflite(model, weights="int2")


def test_unit_feed_folds_the_row_sums():
    model = conv_model(0.5 / 255)
    plans = {p.name: p for p in kbnn.export.plan_model(model, weights="packed")}
    encoded = {p.name: p for p in kbnn.export.plan_model(model, weights="int4")}
    dense, plain = encoded["dense"], plans["dense"]
    levels = np.where(model.get_layer("dense").kernel.numpy() >= 0, 1.0, -1.0)
    np.testing.assert_allclose(dense.scale, 2 * plain.scale)
    np.testing.assert_allclose(dense.offset, plain.offset - plain.scale * levels.sum(0))
    assert encoded["real_in"].stored_shape == (3, 3, 5, 32)   # one constant channel
    assert lowbit.input_columns(encoded["signs_in"]) == 1


# --- the post-pass ------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [4, 2])
def test_store_low_bit_packs_binary_kernels_as_litert_reads_them(bits):
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((64,)), kbnn.layers.QuantDense(
        24, kernel_quantizer="ste_sign", input_quantizer="ste_sign", name="binary"),
        keras.layers.Dense(40, name="real")])   # 960 weights: stays float32
    int8 = export_tflite(model, weights="int8").tflite
    low, count = lowbit.store_low_bit(int8, bits)
    assert count == 1
    assert kernel_types(low) == {("FULLY_CONNECTED", f"INT{bits}"),
                                 ("FULLY_CONNECTED", "FLOAT32")}
    stored = schema.ModelT.InitFromObj(schema.Model.GetRootAs(low, 0))
    (tensor,) = [t for t in stored.subgraphs[0].tensors if t.type == getattr(
        schema.TensorType, f"INT{bits}")]
    data = np.asarray(stored.buffers[tensor.buffer].data, np.uint8)
    assert data.size == 24 * 64 * bits // 8
    # Element i sits in bits (i % per_byte) * bits of byte i // per_byte, two's complement.
    codes = np.stack([(data >> (bits * k)) & ((1 << bits) - 1) for k in range(8 // bits)], -1)
    values = np.where(codes >= 1 << (bits - 1), codes.astype(int) - (1 << bits), codes)
    signs = np.where(model.get_layer("binary").kernel.numpy() >= 0, 1, -1).T
    np.testing.assert_array_equal(values.reshape(24, 64), signs)
    x = np.random.default_rng(2).normal(size=(30, 64)).astype(np.float32)
    np.testing.assert_allclose(verify.run_tflite(low, x), verify.run_tflite(int8, x),
                               rtol=1e-5, atol=1e-5)


def test_store_low_bit_leaves_real_kernels_alone():
    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32)])
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    int8 = converter.convert()
    low, count = lowbit.store_low_bit(int8, 2)
    assert count == 0 and kernel_types(low) == {("FULLY_CONNECTED", "INT8")}


# --- what cannot be stored this way is refused ----------------------------------------------------


def test_a_model_without_binary_kernels_is_refused():
    with pytest.raises(ExportError, match=r"no binary kernel.*--weights float"):
        export_tflite(kbnn.zoo.float_mlp((64,)), weights="int2")


def test_a_large_real_kernel_is_refused_naming_the_layer():
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, name="real"),
                              kbnn.layers.QuantDense(32, kernel_quantizer="ste_sign",
                                                     input_quantizer="ste_sign")])
    with pytest.raises(ExportError, match=r"'real'.*2,048 weights.*--weights packed or float"):
        export_tflite(model, weights="int4")


def test_binary_kernel_on_real_inputs_inside_the_model_is_refused():
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, activation="relu"),
                              kbnn.layers.QuantDense(64, kernel_quantizer="ste_sign",
                                                     name="on_relu")])
    with pytest.raises(ExportError, match=r"'on_relu'.*real inputs computed inside.*"
                                          r"--weights packed or float"):
        export_tflite(model, weights="int8")
    export_tflite(model, weights="packed")   # the mode the message names works


def test_binary_depthwise_is_refused():
    model = keras.Sequential([keras.Input((8, 8, 128)), kbnn.layers.QuantDepthwiseConv2D(
        3, depthwise_quantizer="ste_sign", input_quantizer="ste_sign", name="dw")])
    with pytest.raises(ExportError, match=r"'dw'.*depthwise.*--weights packed or float"):
        export_tflite(model, weights="int2")


# --- the command line ---------------------------------------------------------------------------


def test_cli_int2_verifies_reports_and_writes(tmp_path, capsys):
    keras.utils.set_random_seed(3)
    path = tmp_path / "bnn.keras"
    kbnn.zoo.bnn_mlp((64,)).save(path)
    out = tmp_path / "bnn_int2.tflite"
    assert export_main(["--tflite", str(path), "--weights", "int2", "--report",
                        "--verify-samples", "100", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "random inputs (pixels k/255)" in printed
    assert "tolerance rtol 0.0001, atol 0.001" in printed
    assert "runs on: ai-edge-litert 2.1.2+" in printed and " int2 " in printed
    assert ("FULLY_CONNECTED", "INT2") in kernel_types(out.read_bytes())


def test_cli_refuses_a_float_model_and_writes_nothing(tmp_path, capsys):
    path = tmp_path / "float.keras"
    kbnn.zoo.float_mlp((64,)).save(path)
    assert export_main(["--tflite", str(path), "--weights", "int2",
                        "--verify-samples", "10"]) == 1
    err = capsys.readouterr().err
    assert "no binary kernel" in err and "--weights float" in err and "nothing written" in err
    assert not (tmp_path / "float.tflite").exists()
