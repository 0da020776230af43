"""kbnn.runtime's packed convolutions: claimed, bit-identical to the stock runtime, kernels exact."""

import ctypes
import pathlib

import keras
import numpy as np
import pytest

import kbnn  # noqa: F401  (registers kbnn's layers for load_model)
import kbnn.export
from kbnn.layers import QuantConv2D, QuantDepthwiseConv2D

# test_runtime skips at import, and this module with it, where the delegate is not built.
from test_runtime import _with_int32_constant, assert_agree, run, runtime  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402
from test_export import random_model  # noqa: E402

SAVED = pathlib.Path(__file__).resolve().parents[1] / "saved_models"


def packed_layers(result):
    """Layers the file stores packed (each one the delegate should claim)."""
    return sum(plan.packed for plan in result.plans)


# --- the conv kernels against the direct loop ------------------------------------------------

def _run_conv(lib, level, reference, shape, x, levels, out_size):
    out = np.full(out_size, np.nan, np.float32)
    x = np.ascontiguousarray(x, np.float32)  # kept alive across the call
    levels = np.ascontiguousarray(levels, np.uint8)
    status = lib.kbnn_run_conv(level, int(reference), (ctypes.c_int * 14)(*shape),
                               x.ctypes.data, levels.ctypes.data, out.ctypes.data)
    return status, out


def _output_size(size, kernel, stride, dilation, same):
    effective = (kernel - 1) * dilation + 1
    return -(-size // stride) if same else (size - effective) // stride + 1


CONV_CASES = [  # depthwise, kh, kw, in_c, out_c or multiplier, sh, sw, dh, dw, same, h, w
    (0, 3, 3, 48, 48, 1, 1, 1, 1, 1, 9, 8),
    (0, 3, 2, 5, 7, 2, 1, 1, 1, 1, 7, 9),
    (0, 1, 1, 70, 17, 1, 1, 1, 1, 0, 3, 5),
    (0, 3, 3, 3, 9, 1, 1, 2, 2, 1, 8, 7),
    (0, 2, 3, 129, 13, 2, 2, 1, 1, 0, 6, 7),
    (0, 5, 4, 1, 33, 1, 2, 1, 1, 1, 6, 5),
    (1, 3, 3, 5, 2, 1, 1, 1, 1, 1, 7, 6),
    (1, 2, 3, 4, 1, 2, 1, 1, 1, 0, 5, 8),
    (1, 3, 2, 3, 3, 1, 1, 2, 1, 1, 9, 4),
]


@pytest.mark.parametrize("level", list(runtime.KERNEL_LEVELS))
def test_conv_kernels_agree_with_the_direct_loop(level):
    # Every kernel level this CPU runs, on odd sizes, padding, strides and dilation: +-1
    # inputs (popcounts with the padding corrected), signs of real inputs (bits y >= 0)
    # and real inputs (summed in patch order), +-1 and 0/1 weights; bit for bit.
    if level not in runtime.cpu_kernel_levels():
        pytest.skip(f"this CPU does not run {level} kernels")
    lib = ctypes.CDLL(runtime.library_path())
    lib.kbnn_run_conv.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                  ctypes.c_void_p, ctypes.c_void_p]
    rng = np.random.default_rng(runtime.KERNEL_LEVELS[level])
    for case in CONV_CASES:
        depthwise, kh, kw, channels, m, sh, sw, dh, dw, same, h, w = case
        out_c = channels * m if depthwise else m
        out_size = (_output_size(h, kh, sh, dh, same) * _output_size(w, kw, sw, dw, same)
                    * out_c)
        levels = rng.integers(0, 2, (kh * kw * channels * m) if depthwise
                              else (out_c * kh * kw * channels))
        real = rng.normal(size=(h, w, channels)).astype(np.float32)
        signs = np.where(real >= 0, 1.0, -1.0).astype(np.float32)
        for zero_low in (0, 1):
            for x, given, expected_from in ((signs, 0, signs), (real, 1, signs),
                                            (real, 0, real)):
                shape = [*case[:10], h, w, zero_low, given]
                status, fast = _run_conv(lib, runtime.KERNEL_LEVELS[level], False, shape, x,
                                         levels, out_size)
                assert status == 0
                status, expected = _run_conv(lib, 0, True, shape, expected_from, levels,
                                             out_size)
                assert status == 0
                np.testing.assert_array_equal(fast, expected, err_msg=f"{case} {zero_low}")
    bad = [0, 0, 3, 4, 4, 1, 1, 1, 1, 1, 5, 5, 0, 0]  # a 0 x 3 kernel
    assert _run_conv(lib, 0, False, bad, real, levels, 1)[0] == -1


# --- files --------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(16))
def test_random_models_have_every_conv_claimed_and_agree(seed):
    model, x = random_model(seed)
    result = kbnn.export.export_tflite(model)
    assert any(isinstance(layer, (QuantConv2D, QuantDepthwiseConv2D)) for layer in model.layers)
    delegate = runtime.load_delegate()
    fast = run(result.tflite, x, delegate, batch=25)  # 25, 25, 14: resized
    assert runtime.claimed_layers(delegate) == packed_layers(result)
    stock = run(result.tflite, x, batch=25)
    assert_agree(stock, fast)
    assert np.array_equal(stock, fast)


def test_threads_split_a_conv_and_agree():
    keras.utils.set_random_seed(5)
    binary = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign", padding="same")
    model = keras.Sequential([
        keras.Input((33, 31, 3)), QuantConv2D(64, 3, kernel_quantizer="ste_sign", padding="same"),
        keras.layers.BatchNormalization(), QuantConv2D(96, 3, **binary),
        keras.layers.BatchNormalization(), keras.layers.Flatten(),
        kbnn.layers.QuantDense(7, input_quantizer="ste_sign", kernel_quantizer="ste_sign")])
    result = kbnn.export.export_tflite(model)
    x = np.random.default_rng(5).normal(size=(6, 33, 31, 3)).astype(np.float32)
    delegate = runtime.load_delegate(num_threads=2)
    fast = run(result.tflite, x, delegate, threads=2)
    assert runtime.claimed_layers(delegate) == 3
    np.testing.assert_array_equal(fast, run(result.tflite, x))


def test_conv_words_of_the_wrong_size_are_declined():
    # The first conv's 48 x 3 x 3 x 1 kernel is stored in 14 words; with 15 it no longer
    # fits the layout: that conv is left to the runtime (which still runs the file: the
    # slice takes the first 432 bits), the other layers are claimed.
    model = keras.models.load_model(SAVED / "bnn_cnn_deterministic.keras")
    result = kbnn.export.export_tflite(model)
    words = np.random.default_rng(0).integers(-2**31, 2**31, 15, dtype=np.int64)
    bad = _with_int32_constant(result.tflite, [14], words.astype(np.int32))
    x = np.random.default_rng(1).random((5, 28, 28, 1), np.float32)
    delegate = runtime.load_delegate()
    fast = run(bad, x, delegate)
    assert runtime.claimed_layers(delegate) == packed_layers(result) - 1
    np.testing.assert_array_equal(fast, run(bad, x))


def test_a_conv_fed_other_shapes_resizes():
    # The same interpreter, resized from 1 to 3 images: the conv plans follow the input.
    model = keras.models.load_model(SAVED / "bnn_cnn_deterministic.keras")
    tflite = kbnn.export.to_tflite(model)
    x = np.random.default_rng(2).random((3, 28, 28, 1), np.float32)
    interpreter = Interpreter(model_content=tflite,
                              experimental_delegates=[runtime.load_delegate()])
    index = interpreter.get_input_details()[0]["index"]
    outputs = []
    for batch in (x[:1], x):
        interpreter.resize_tensor_input(index, batch.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(index, batch)
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))
    np.testing.assert_array_equal(outputs[0], outputs[1][:1])
    np.testing.assert_array_equal(outputs[1], run(tflite, x))
