import keras
import pytest

import kbnn
from kbnn.layers import QuantConv2D, QuantDense, QuantDepthwiseConv2D


def hand_counted_model():
    inputs = keras.Input((8, 8, 3))
    x = QuantConv2D(4, 3, kernel_quantizer="ste_sign", use_bias=False)(inputs)  # 6x6x4
    x = keras.layers.BatchNormalization()(x)
    x = QuantDepthwiseConv2D(3, input_quantizer="ste_sign",
                             depthwise_quantizer="ste_sign")(x)              # 4x4x4
    x = keras.layers.Flatten()(x)                                            # 64
    x = QuantDense(5, input_quantizer=kbnn.quantizers.StochasticSign(seed=1),
                   kernel_quantizer="ste_sign")(x)
    outputs = keras.layers.Dense(2)(x)
    return keras.Model(inputs, outputs, name="hand")


def test_numbers_match_a_hand_count():
    s = kbnn.summary(hand_counted_model(), print_fn=None)
    rows = {l.kind: l for l in s.layers}
    conv = rows["QuantConv2D"]
    assert (conv.params_1bit, conv.params_32bit) == (3 * 3 * 3 * 4, 0)
    assert (conv.binary_macs, conv.float_macs) == (0, 6 * 6 * 4 * 27)  # float input
    bn = rows["BatchNormalization"]
    assert (bn.params_1bit, bn.params_32bit) == (0, 16)
    dw = rows["QuantDepthwiseConv2D"]
    assert (dw.params_1bit, dw.params_32bit) == (36, 4)
    assert (dw.binary_macs, dw.float_macs) == (4 * 4 * 4 * 9, 0)
    dense = rows["QuantDense"]  # the seed state of its quantizer is no parameter
    assert (dense.params_1bit, dense.params_32bit) == (320, 5)
    assert (dense.binary_macs, dense.float_macs) == (320, 0)
    assert dense.output_shape == (None, 5)
    plain = rows["Dense"]
    assert (plain.params_1bit, plain.params_32bit, plain.float_macs) == (0, 12, 10)
    assert s.params_1bit == 108 + 36 + 320
    assert s.params_32bit == 16 + 4 + 5 + 12
    assert s.memory_bytes == 464 / 8 + 37 * 4
    assert s.float32_memory_bytes == (464 + 37) * 4
    assert s.binary_macs == 576 + 320
    assert s.float_macs == 3888 + 10


def test_prints_a_table_with_totals():
    lines = []
    kbnn.summary(hand_counted_model(), print_fn=lines.append)
    text = lines[0]
    assert 'Model "hand"' in text
    assert "quant_dense" in text and "QuantDepthwiseConv2D" in text
    total = next(line for line in text.splitlines() if line.startswith("Total"))
    assert total.split()[1:] == ["464", "37", "0.20", "896", "3,898"]


def test_unbuilt_model_error_says_how_to_fix():
    with pytest.raises(ValueError, match="keras.Input"):
        kbnn.summary(keras.Sequential([QuantDense(3)]))
