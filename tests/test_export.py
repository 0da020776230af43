"""The TFLite export: packing, builtin ops only, agreement with Keras, the CLI."""

import os

import keras
import numpy as np
import pytest

import kbnn
from kbnn.export import ExportError, export_tflite, to_tflite, verify
from kbnn.export.__main__ import main as export_main
from kbnn.layers import QuantConv2D, QuantDense, QuantDepthwiseConv2D

BINARY = ["ste_sign", "approx_sign", "swish_sign", "stochastic_sign",
          "magnitude_aware_sign", "ste_heaviside"]
INPUT = [q for q in BINARY if q != "magnitude_aware_sign"]  # its scale spans the batch
# Every op the exporter may emit (all builtin); each test also checks the flatbuffer
# declares no custom op.
EXPECTED_OPS = {"ABS", "ADD", "BITCAST", "BITWISE_XOR", "CAST", "CONV_2D",
                "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "GATHER", "GREATER", "GREATER_EQUAL",
                "MEAN", "MUL", "RANGE", "RESHAPE", "RIGHT_SHIFT", "SELECT", "SELECT_V2",
                "SHAPE", "STRIDED_SLICE", "SUB", "SUM", "TRANSPOSE", "MAX_POOL_2D", "RELU", "PAD",
                "DEQUANTIZE", "PACK", "BROADCAST_TO", "FILL", "CONCATENATION", "ZEROS_LIKE",
                "SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND"}  # the last two: dilated depthwise


def test_custom_ops_are_detected():
    from ai_edge_litert import schema_py_generated as schema

    names = {n for n in dir(schema.BuiltinOperator) if n.isupper()}
    assert EXPECTED_OPS <= names and "CUSTOM" not in EXPECTED_OPS
    model = kbnn.zoo.bnn_mlp((8,))
    assert verify.custom_ops(to_tflite(model)) == []
    import tensorflow as tf

    # A file with a Flex op (converted with SELECT_TF_OPS) is caught.
    fn = tf.function(lambda x: tf.strings.to_number(tf.strings.as_string(x)),
                     input_signature=[tf.TensorSpec([2], tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [fn.get_concrete_function()], fn)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS,
                                           tf.lite.OpsSet.SELECT_TF_OPS]
    assert verify.custom_ops(converter.convert())[0].startswith("Flex")


def randomize_batch_norms(model, rng):
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 3, n))
            layer.moving_variance.assign(rng.uniform(0.5, 20, n))
            layer.gamma.assign(rng.normal(1, 0.5, n))
            layer.beta.assign(rng.normal(0, 1, n))


def random_model(seed):
    """A small random model of kbnn layers: odd and non-square sizes, strides, dilation,
    padding, bias, BN.

    Each kernel layer gets a bias or a batch norm (or both): without a random
    offset, +-1 sums are often exactly 0 before the next sign, and such ties
    resolve by float rounding, differently in Keras and in any other program.
    """
    keras.utils.set_random_seed(seed)  # kernels too: each seed is one fixed model
    rng = np.random.default_rng(seed)
    pick = lambda options: options[rng.integers(len(options))]  # noqa: E731
    size = int(rng.integers(5, 10))
    inputs = keras.Input((size, size + 1, int(rng.integers(1, 4))))
    x = inputs
    for i in range(int(rng.integers(1, 3))):
        kind = pick(["conv", "depthwise"])
        bn = bool(rng.integers(2))
        # Kernels and strides may differ per axis; dilation (with "same" padding, so
        # the maps never shrink to nothing) only where the strides are 1, as Keras asks.
        kernel_size = (int(pick([1, 2, 3])), int(pick([1, 2, 3])))
        strides = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        dilation = 2 if strides == (1, 1) and rng.integers(2) else 1
        padding = pick(["same", "valid"])
        if dilation > 1 or x.shape[1] < kernel_size[0] or x.shape[2] < kernel_size[1]:
            padding = "same"  # "valid" could leave no output
        common = dict(input_quantizer=None if i == 0 and seed % 2 else pick(INPUT),
                      padding=padding, strides=strides, dilation_rate=dilation,
                      use_bias=not bn or bool(rng.integers(2)),
                      activation=pick([None, "relu"]))
        if kind == "conv":
            x = QuantConv2D(int(rng.integers(1, 6)), kernel_size,
                            kernel_quantizer=pick(BINARY), **common)(x)
        else:
            x = QuantDepthwiseConv2D(kernel_size, depth_multiplier=int(
                rng.integers(1, 3)), depthwise_quantizer=pick(BINARY), **common)(x)
        if bn:
            x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Flatten()(x)
    bn = bool(rng.integers(2))
    x = QuantDense(int(rng.integers(3, 40)), input_quantizer=pick(INPUT),
                   kernel_quantizer=pick(BINARY), use_bias=not bn or bool(rng.integers(2)))(x)
    if bn:
        x = keras.layers.BatchNormalization()(x)
    outputs = QuantDense(int(rng.integers(2, 11)), input_quantizer=pick(INPUT),
                         kernel_quantizer=pick(BINARY))(x)
    model = keras.Model(inputs, outputs)
    for layer in model.layers:  # non-zero biases
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.normal(0, 1, layer.bias.shape))
    randomize_batch_norms(model, rng)
    return model, rng.normal(size=(64, *inputs.shape[1:])).astype("float32")


@pytest.mark.parametrize("seed", range(16))
def test_random_models_export_run_on_builtins_and_agree(seed):
    model, x = random_model(seed)
    result = export_tflite(model)
    assert verify.custom_ops(result.tflite) == []
    assert set(verify.op_names(result.tflite)) <= EXPECTED_OPS
    check = verify.compare(model, result.tflite, x)
    assert check.top1_agreement == 1.0 and check.samples == 64
    binary_weights = sum(int(np.prod(l.kernel.shape)) for l in model.layers
                         if kbnn.quantizers.is_binary(getattr(l, "kernel_quantizer", None)))
    assert sum(l.packed_bits for l in result.plans) == binary_weights


def test_conv_and_depthwise_kernels_are_packed_in_the_file():
    binary = dict(input_quantizer="ste_sign", use_bias=False)
    model = keras.Sequential([
        keras.Input((12, 12, 8)),
        kbnn.layers.QuantConv2D(40, 3, kernel_quantizer="ste_sign", **binary),
        kbnn.layers.QuantDepthwiseConv2D(3, depth_multiplier=2, depthwise_quantizer="ste_sign",
                                         **binary),
    ])
    result = export_tflite(model)
    from ai_edge_litert.interpreter import Interpreter

    tensors = Interpreter(model_content=result.tflite).get_tensor_details()
    shapes = {tuple(t["shape"]) for t in tensors if t["dtype"] == np.int32}
    conv_words, depthwise_words = (3 * 3 * 8 * 40 + 31) // 32, (3 * 3 * 40 * 2 + 31) // 32
    assert (conv_words,) in shapes and (depthwise_words,) in shapes
    assert result.floor_bytes == (3 * 3 * 8 * 40 + 3 * 3 * 40 * 2) / 8
    # No float32 copy of the kernels survived conversion: the whole file is smaller
    # than they would be (8.3 KB, mostly the unpacking graph, vs 14.4 KB).
    assert len(result.tflite) < 4 * (3 * 3 * 8 * 40 + 3 * 3 * 40 * 2)


def test_packed_file_is_near_the_floor_and_stores_words():
    model = kbnn.zoo.bnn_mlp((1024,))
    randomize_batch_norms(model, np.random.default_rng(0))
    result = export_tflite(model)
    floor = (784 * 1024 + 1024 * 10) / 8 + 4 * 2 * (1024 + 10)
    assert result.floor_bytes == floor
    assert len(result.tflite) <= 1.10 * floor
    float_result = export_tflite(model, weights="float")
    assert len(float_result.tflite) > 25 * len(result.tflite)
    # The floor is the model's, whichever mode stores the binary kernels.
    assert float_result.floor_bytes == floor
    assert export_tflite(model, weights="int8").floor_bytes == floor
    from ai_edge_litert.interpreter import Interpreter

    tensors = Interpreter(model_content=result.tflite).get_tensor_details()
    shapes = {tuple(t["shape"]) for t in tensors if t["dtype"] == np.int32}
    assert (784 * 1024 // 32,) in shapes and (1024 * 10 // 32,) in shapes


@pytest.mark.parametrize("weights", ["float", "int8"])
def test_other_weight_modes(weights):
    keras.utils.set_random_seed(0)  # a fixed model: the int8 error depends on the weights
    model = kbnn.zoo.bnn_mlp((64,))
    randomize_batch_norms(model, np.random.default_rng(1))
    x = np.random.default_rng(2).random((50, 28, 28, 1)).astype("float32")
    tflite = to_tflite(model, weights=weights)
    logits = verify.run_tflite(tflite, x)
    expected = model.predict(x, verbose=0)
    tolerance = 1e-3 if weights == "float" else 0.15
    np.testing.assert_allclose(logits, expected, atol=tolerance * np.abs(expected).max())


def test_float_layers_export_as_ordinary_tflite():
    model = kbnn.zoo.float_cnn(filters=(4, 8), dense_units=16)
    x = np.random.default_rng(3).random((20, 28, 28, 1)).astype("float32")
    result = export_tflite(model)
    assert sum(l.packed_bits for l in result.plans) == 0
    assert "BITWISE_XOR" not in verify.op_names(result.tflite)
    verify.compare(model, result.tflite, x)


def test_branching_model_exports_through_the_general_graph():
    inputs = keras.Input((6, 6, 4))
    x = QuantConv2D(4, 3, padding="same", input_quantizer="ste_sign",
                    kernel_quantizer="ste_sign")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Add()([x, inputs])           # a residual connection
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = QuantDense(3, input_quantizer="ste_sign", kernel_quantizer="ste_sign")(x)
    model = keras.Model(inputs, outputs)
    randomize_batch_norms(model, np.random.default_rng(6))
    result = export_tflite(model)
    assert sum(l.packed_bits for l in result.plans) == 3 * 3 * 4 * 4 + 4 * 3
    verify.compare(model, result.tflite,
                   np.random.default_rng(7).normal(size=(32, 6, 6, 4)).astype("float32"))


def test_bi_real_shortcuts_export_packed_and_agree():
    model = kbnn.zoo.bnn_cnn(filters=(4, 8), dense_units=16, shortcuts=True)
    randomize_batch_norms(model, np.random.default_rng(8))
    result = export_tflite(model)
    ops = set(verify.op_names(result.tflite))
    assert ops <= EXPECTED_OPS | {"AVERAGE_POOL_2D"}
    assert {"AVERAGE_POOL_2D", "CONCATENATION"} <= ops  # the pooled, widened shortcuts
    kernels = sum(int(np.prod(l.kernel.shape)) for l in model.layers if hasattr(l, "kernel"))
    assert sum(l.packed_bits for l in result.plans) == kernels  # every kernel is binary
    check = verify.compare(model, result.tflite,
                           np.random.default_rng(9).random((64, 28, 28, 1)).astype("float32"))
    assert check.top1_agreement == 1.0


@pytest.mark.parametrize("depthwise", [False, True], ids=["conv", "depthwise"])
@pytest.mark.parametrize("pad_value", [1.0, -1.0])
def test_pad_values_export_as_the_layer_pads(depthwise, pad_value):
    """Larq's pad_values: the exported file pads "same" convolutions with that value too
    (zero padding would change every border output of these +-1 inputs)."""
    keras.utils.set_random_seed(0)
    binary = dict(input_quantizer="ste_sign", strides=(2, 1), padding="same",
                  pad_values=pad_value, name="padded")
    layer = (QuantDepthwiseConv2D(3, depthwise_quantizer="ste_sign", **binary) if depthwise
             else QuantConv2D(5, 3, kernel_quantizer="ste_sign", **binary))
    model = keras.Sequential([keras.Input((7, 8, 3)), layer, keras.layers.BatchNormalization(),
                              keras.layers.Flatten(), QuantDense(4, kernel_quantizer="ste_sign")])
    randomize_batch_norms(model, np.random.default_rng(1))
    result = export_tflite(model)
    assert result.plans[0].pad_value == pad_value and result.plans[0].packed_bits
    inputs = np.random.default_rng(2).normal(size=(64, 7, 8, 3)).astype("float32")
    np.testing.assert_allclose(verify.run_tflite(result.tflite, inputs),
                               model.predict(inputs, verbose=0), rtol=1e-5, atol=1e-5)
    if depthwise:  # int8 refuses binary depthwise; +-1 padding of a conv it keeps (lowbit)
        with pytest.raises(ExportError, match="Layer 'padded' .*depthwise.*--weights packed"):
            to_tflite(model, weights="int8")


def test_batch_dependent_input_quantizer_is_refused():
    inputs = keras.Input((4,))
    outputs = QuantDense(2, input_quantizer="magnitude_aware_sign", name="mag")(inputs)
    with pytest.raises(ExportError, match="Layer 'mag' .*magnitude_aware_sign"):
        to_tflite(keras.Model(inputs, outputs))


def test_unsupported_layer_is_named():
    inputs = keras.Input((6, 4))
    x = keras.layers.LSTM(3, name="my_lstm")(inputs)
    model = keras.Model(inputs, QuantDense(2, kernel_quantizer="ste_sign")(x))
    with pytest.raises(ExportError, match="Layer 'my_lstm' of type LSTM cannot be exported"):
        to_tflite(model)


# --- the command line ---------------------------------------------------------------------


@pytest.fixture
def saved_bnn(tmp_path):
    model = kbnn.zoo.bnn_mlp((32,))
    randomize_batch_norms(model, np.random.default_rng(4))
    path = tmp_path / "bnn.keras"
    model.save(path)
    return path


def test_cli_writes_a_verified_file(saved_bnn, tiny_fashion_mnist, capsys):
    out = saved_bnn.parent / "out" / "bnn.tflite"
    out.parent.mkdir()
    assert export_main(["--tflite", str(saved_bnn), "-o", str(out), "--report",
                        "--verify-data", str(tiny_fashion_mnist)]) == 0
    text = capsys.readouterr().out
    assert "verified on 100 inputs: top-1 agreement 100.00%" in text
    assert "size / floor" in text and "quant_dense" in text
    assert os.listdir(out.parent) == ["bnn.tflite"]  # no temporary left behind
    model = keras.models.load_model(saved_bnn)
    x = np.random.default_rng(5).random((10, 28, 28, 1)).astype("float32")
    np.testing.assert_allclose(verify.run_tflite(out.read_bytes(), x),
                               model.predict(x, verbose=0), rtol=1e-4, atol=1e-3)


def test_cli_random_inputs_default_output_path(saved_bnn, monkeypatch, capsys):
    monkeypatch.delenv("KBNN_DATA_DIR", raising=False)
    assert export_main(["--tflite", str(saved_bnn), "--verify-samples", "20"]) == 0
    assert "verifying on 20 random inputs" in capsys.readouterr().out
    assert saved_bnn.with_suffix(".tflite").exists()


def assert_fails(args, capsys, message, directory):
    before = set(os.listdir(directory))
    assert export_main(args) == 1
    err = capsys.readouterr().err
    assert message in err and "nothing written" in err
    assert set(os.listdir(directory)) == before


def test_cli_rejects_bad_inputs(saved_bnn, tmp_path, capsys):
    h5 = tmp_path / "model.h5"
    h5.write_bytes(b"x")
    assert_fails(["--tflite", str(h5)], capsys, "expected a .keras file", tmp_path)
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"not a zip")
    assert_fails(["--tflite", str(corrupt)], capsys, "not a readable Keras model", tmp_path)
    assert_fails(["--tflite", str(tmp_path / "missing.keras")], capsys, "no such file",
                 tmp_path)
    assert_fails(["--tflite", str(saved_bnn), "-o", str(tmp_path / "nodir" / "x.tflite")],
                 capsys, "not writable", tmp_path)
    model_bytes = saved_bnn.read_bytes()
    assert_fails(["--tflite", str(saved_bnn), "-o", str(saved_bnn)], capsys,
                 "is the model being exported", tmp_path)
    assert saved_bnn.read_bytes() == model_bytes
    (tmp_path / "adir").mkdir()
    assert_fails(["--tflite", str(saved_bnn), "-o", str(tmp_path / "adir")], capsys,
                 "it is a directory", tmp_path)


def test_cli_rejects_unknown_input_sizes_and_mismatched_verify_data(tmp_path, capsys,
                                                                    tiny_fashion_mnist):
    conv = kbnn.layers.QuantConv2D(2, 3, kernel_quantizer="ste_sign")
    inputs = keras.Input((None, None, 1))
    keras.Model(inputs, conv(inputs)).save(tmp_path / "fully_conv.keras")
    assert_fails(["--tflite", str(tmp_path / "fully_conv.keras")], capsys,
                 "export needs every dimension but the batch fixed", tmp_path)
    keras.Sequential([keras.Input((5,)), kbnn.layers.QuantDense(
        2, kernel_quantizer="ste_sign")]).save(tmp_path / "small.keras")
    assert_fails(["--tflite", str(tmp_path / "small.keras"), "--verify-data",
                  str(tiny_fashion_mnist)], capsys, "the model takes (5,)", tmp_path)


def test_quantizer_off_its_levels_names_the_layer(tmp_path, capsys):
    class ZeroOne(kbnn.quantizers.BinaryQuantizer):  # outputs 0/1, declares -1/+1
        def call(self, x):
            return keras.ops.cast(x >= 0, x.dtype)

    model = keras.Sequential([keras.Input((5,)), kbnn.layers.QuantDense(
        2, kernel_quantizer=ZeroOne(), name="odd_dense")])
    with pytest.raises(kbnn.export.ExportError,
                       match="Layer 'odd_dense' \\(QuantDense\\): ZeroOne produced values"):
        export_tflite(model)


def test_cli_unsupported_layer(tmp_path, capsys):
    inputs = keras.Input((6, 4))
    x = keras.layers.LSTM(3, name="my_lstm")(inputs)
    path = tmp_path / "lstm.keras"
    keras.Model(inputs, x).save(path)
    assert_fails(["--tflite", str(path), "--verify-samples", "4"], capsys,
                 "Layer 'my_lstm' of type LSTM", tmp_path)


def test_cli_writes_nothing_when_verification_fails(saved_bnn, monkeypatch, capsys):
    monkeypatch.setattr(verify, "run_tflite", lambda tflite, x: np.zeros((len(x), 10)))
    assert_fails(["--tflite", str(saved_bnn), "--verify-samples", "8"], capsys,
                 "disagrees with Keras", saved_bnn.parent)


def test_cli_int8_mode_verifies_a_trained_model(tmp_path, tiny_fashion_mnist, capsys):
    from kbnn.train import train_and_save

    train_and_save("bnn_mlp", {"hidden_units": (64,)}, tmp_path / "bnn", epochs=3,
                   batch_size=20, lr=0.01, data_dir=tiny_fashion_mnist, validation_size=50,
                   verbose=0)
    out = tmp_path / "bnn_int8.tflite"
    assert export_main(["--tflite", str(tmp_path / "bnn.keras"), "--weights", "int8", "-o",
                        str(out), "--verify-data", str(tiny_fashion_mnist)]) == 0
    assert "tolerance rtol 0.0001, atol 0.001)" in capsys.readouterr().out  # as strict as packed
    assert len(out.read_bytes()) < len(to_tflite(keras.models.load_model(
        tmp_path / "bnn.keras"), weights="float")) / 3


def test_cli_rejects_zero_samples(saved_bnn, capsys):
    with pytest.raises(SystemExit):
        export_main(["--tflite", str(saved_bnn), "--verify-samples", "0"])
    assert "give a number of inputs >= 1" in capsys.readouterr().err


@pytest.mark.parametrize("seed", range(8))
def test_random_models_agree_with_xor_popcount_dense_layers(seed):
    model, x = random_model(seed)
    result = export_tflite(model, xor_popcount_min_weights=0)  # every eligible dense layer
    designs = {l.name: l.design for l in result.plans if l.design}
    for layer in model.layers:
        if isinstance(layer, QuantDense):
            signs = type(layer.input_quantizer).__name__ != "SteHeaviside"
            # -s/+s levels (magnitude-aware too) fit; 0/1 levels do not.
            levels = not isinstance(layer.kernel_quantizer, kbnn.quantizers.SteHeaviside)
            assert designs[layer.name] == ("xor-popcount" if signs and levels else "unpack")
    assert set(verify.op_names(result.tflite)) <= EXPECTED_OPS
    check = verify.compare(model, result.tflite, x)
    assert check.top1_agreement == 1.0


def test_large_binary_input_dense_layers_use_one_popcount_table():
    from ai_edge_litert.interpreter import Interpreter

    keras.utils.set_random_seed(0)
    binary = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign")
    model = keras.Sequential([
        keras.Input((70,)), QuantDense(40, kernel_quantizer="ste_sign"),
        QuantDense(70, **binary), QuantDense(40, **binary), QuantDense(9, **binary)])
    result = export_tflite(model, xor_popcount_min_weights=70 * 40)
    assert [l.design for l in result.plans] == [  # the table is listed where first used
        "unpack", "", "xor-popcount", "xor-popcount", "unpack"]
    table, = [l for l in result.plans if l.kind == "lookup table"]
    assert table.bytes == 4 * 65536 and table.bits == 0  # stored, but not in the floor
    dense = {l.name: l for l in result.plans}[model.layers[1].name]
    assert (dense.packed_bits, dense.packed_words) == (40 * 70, 70 * 2)  # rows padded to 64 bits
    tensors = Interpreter(model_content=result.tflite).get_tensor_details()
    shapes = [tuple(t["shape"]) for t in tensors]
    assert shapes.count((65536,)) == 1 and (70, 2) in shapes and (40, 3) in shapes
    # Exact: +-1 dot products are integers, so float rounding cannot enter.
    x = np.random.default_rng(1).normal(size=(50, 70)).astype("float32")
    expected = model.predict(x, verbose=0)
    np.testing.assert_array_equal(verify.run_tflite(result.tflite, x), expected)


@pytest.mark.parametrize("batch_size", [1, 7])
def test_static_batch_size_stays_packed_and_verifies_in_chunks(batch_size):
    model = kbnn.zoo.bnn_cnn(filters=(4, 8), dense_units=16)
    randomize_batch_norms(model, np.random.default_rng(10))
    dynamic = to_tflite(model)
    tflite = to_tflite(model, batch_size=batch_size)
    from ai_edge_litert.interpreter import Interpreter

    detail = Interpreter(model_content=tflite).get_input_details()[0]
    assert detail["shape_signature"].tolist() == [batch_size, 28, 28, 1]
    # Still packed: the unpacking is not folded into float kernels by the converter.
    assert abs(len(tflite) - len(dynamic)) < 1000
    assert set(verify.op_names(tflite)) <= EXPECTED_OPS
    x = np.random.default_rng(11).random((20, 28, 28, 1)).astype("float32")  # 20 % 7 != 0
    assert verify.compare(model, tflite, x).top1_agreement == 1.0


def test_static_batch_size_rejects_non_numbers():
    with pytest.raises(ExportError, match="batch_size=0: give a whole number >= 1"):
        to_tflite(kbnn.zoo.bnn_mlp((8,)), batch_size=0)


def test_cli_batch_option_fixes_the_batch(saved_bnn, capsys):
    out = saved_bnn.with_suffix(".tflite")
    assert export_main(["--tflite", str(saved_bnn), "--batch", "3",
                        "--verify-samples", "10"]) == 0
    from ai_edge_litert.interpreter import Interpreter

    detail = Interpreter(model_content=out.read_bytes()).get_input_details()[0]
    assert detail["shape_signature"].tolist() == [3, 28, 28, 1]
    with pytest.raises(SystemExit):
        export_main(["--tflite", str(saved_bnn), "--batch", "0"])
    assert "give a number of inputs per batch >= 1" in capsys.readouterr().err


def test_cli_verify_data_takes_any_idx_shape_or_a_npy_file(tmp_path, capsys):
    from fakes import idx_bytes

    model = keras.Sequential([keras.Input((5, 3)), keras.layers.Flatten(),
                              kbnn.layers.QuantDense(2, kernel_quantizer="ste_sign")])
    model.save(tmp_path / "small.keras")
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    (data / "README").write_text("not an IDX file")
    (data / "labels-idx1-ubyte").write_bytes(idx_bytes(rng.integers(0, 9, 40)))
    (data / "wrong-idx3-ubyte").write_bytes(idx_bytes(rng.integers(0, 255, (40, 3, 5))))
    (data / "pixels-idx3-ubyte").write_bytes(idx_bytes(rng.integers(0, 255, (30, 5, 3))))
    assert export_main(["--tflite", str(tmp_path / "small.keras"), "--verify-data",
                        str(data)]) == 0
    assert "verifying on 30 inputs from pixels-idx3-ubyte" in capsys.readouterr().out
    np.save(tmp_path / "x.npy", rng.random((12, 5, 3)).astype("float32"))
    assert export_main(["--tflite", str(tmp_path / "small.keras"), "--verify-data",
                        str(tmp_path / "x.npy"), "--verify-samples", "10"]) == 0
    assert "verifying on 10 inputs from x.npy" in capsys.readouterr().out
    np.save(tmp_path / "bad.npy", np.zeros((4, 15), "float32"))
    assert_fails(["--tflite", str(tmp_path / "small.keras"), "--verify-data",
                  str(tmp_path / "bad.npy")], capsys, "give an array of shape (N, 5, 3)",
                 tmp_path)
