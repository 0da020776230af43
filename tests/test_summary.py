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


def test_counts_by_precision_as_larq():
    inputs = keras.Input((6, 6, 2))
    x = QuantConv2D(4, 3, input_quantizer="ste_sign", kernel_quantizer="ste_tern",
                    use_bias=False)(inputs)                                        # 4x4x4
    x = kbnn.layers.QuantSeparableConv2D(
        3, 3, input_quantizer=kbnn.quantizers.DoReFa(k_bit=4),
        depthwise_quantizer="ste_sign", pointwise_quantizer=kbnn.quantizers.NoOp(1))(x)  # 2x2x3
    x = keras.layers.BatchNormalization()(x)
    s = kbnn.summary(keras.Model(inputs, x), print_fn=None)
    conv, sep, bn = s.layers[1:]
    assert conv.input_bits == 1 and conv.params_by_bits == {2: 72}
    assert conv.macs_by_precision == {2: 16 * 72}            # max(1, 2)
    # NoOp marks, it does not quantize: its kernel is stored in 32 bits.
    assert sep.params_by_bits == {1: 36, 32: 12 + 3}
    assert sep.macs_by_precision == {4: 4 * 36, 32: 4 * 12}  # max(4, 1), max(4, 32)
    assert s.params_by_bits == {1: 36, 2: 72, 32: 15 + 12}
    assert s.memory_bytes == (36 + 2 * 72 + 32 * 27) / 8
    assert s.int8_float_memory_bytes == (36 + 2 * 72 + 8 * 27) / 8
    assert (s.trainable_params, s.non_trainable_params) == (72 + 51 + 6, 6)
    assert s.compression_ratio == s.float32_memory_bytes / s.memory_bytes
    assert s.mac_ratio(2) == 16 * 72 / s.macs and s.mac_ratio(1) == 0.0
    text = str(s)
    assert "2-bit params" in text and "4-bit MACs" in text and "ternarized" in text
    assert "Params: 135 (trainable 129, non-trainable 6)" in text


def test_transposed_and_one_dimensional_layers_count_their_macs():
    inputs = keras.Input((5, 2))
    x = kbnn.layers.QuantConv1D(3, 3, kernel_quantizer="ste_sign", use_bias=False)(inputs)  # 3x3
    x = keras.layers.Reshape((3, 1, 3))(x)
    x = kbnn.layers.QuantConv2DTranspose(2, 2, strides=2, use_bias=False)(x)         # from 3x1
    s = kbnn.summary(keras.Model(inputs, x), print_fn=None)
    assert s.layers[1].macs_by_precision == {32: 3 * 18}
    assert s.layers[3].macs_by_precision == {32: 3 * 1 * 2 * 2 * 3 * 2}
