import numpy as np
import pytest

from kbnn import quantizers
import tensorflow as tf

from kbnn.export.bits import byte_table, kernel_bits, pack_bits, unpack_bits, unpack_bits_tf


@pytest.mark.parametrize("size", [1, 7, 8, 9, 31, 32, 33, 100, 1000])
def test_pack_unpack_round_trip_any_size(size):
    bits = np.random.default_rng(size).random(size) < 0.5
    words = pack_bits(bits)
    assert words.dtype == np.dtype("<i4") and words.size == -(-size // 32)
    np.testing.assert_array_equal(unpack_bits(words, size), bits)


def test_bit_order_little_endian_and_zero_padding():
    bits = np.zeros(40, bool)
    bits[[0, 9, 31, 32]] = True
    words = pack_bits(bits)
    # element i is bit i % 8 of byte i // 8; bytes little-endian in each word.
    assert words.view(np.uint8).tolist() == [1, 2, 0, 128, 1, 0, 0, 0]
    assert words[0] == np.int32(-2**31 + 2**9 + 1)


def test_kernel_bits_agree_with_the_quantizers():
    kernel = np.array([[0.0, -0.5, 2.0], [-0.0, 0.7, -3.0]], "float32")
    bits, low, high = kernel_bits(quantizers.SteSign(), kernel)
    # sign(0) = +1 is bit 1, for +0.0 and -0.0 alike.
    np.testing.assert_array_equal(bits, [[1, 0, 1], [1, 1, 0]])
    np.testing.assert_array_equal(low, [-1, -1, -1])
    np.testing.assert_array_equal(high, [1, 1, 1])
    bits, low, high = kernel_bits(quantizers.SteHeaviside(), kernel)
    np.testing.assert_array_equal(bits, [[0, 0, 1], [0, 1, 0]])
    np.testing.assert_array_equal(low, 0)
    bits, low, high = kernel_bits(quantizers.MagnitudeAwareSign(), kernel)
    np.testing.assert_allclose(high, [0.0, 0.6, 2.5])
    for name in ("ste_sign", "approx_sign", "swish_sign", "stochastic_sign",
                 "magnitude_aware_sign", "ste_heaviside"):
        q = quantizers.get(name)
        bits, low, high = kernel_bits(q, kernel)
        np.testing.assert_array_equal(np.where(bits, high, low), q(kernel, training=False))


@pytest.mark.parametrize("zero_low", [False, True])
@pytest.mark.parametrize("size", [5, 64, 77])
def test_tensorflow_unpack_matches_the_numpy_convention(size, zero_low):
    bits = np.random.default_rng(size).random(size) < 0.5
    table = byte_table(tf.constant(0), zero_low=zero_low)
    values = unpack_bits_tf(tf.constant(pack_bits(bits)), size, [size], table).numpy()
    np.testing.assert_array_equal(values, np.where(bits, 1.0, 0.0 if zero_low else -1.0))


@pytest.mark.parametrize("k", [1, 16, 31, 32, 33, 70])
def test_rows_pack_on_their_own_and_tensorflow_packs_signs_the_same_way(k):
    from kbnn.export.bits import pack_rows, pack_rows_tf

    bits = np.random.default_rng(k).random((5, k)) < 0.5
    words = pack_rows(bits)
    assert words.shape == (5, -(-k // 32)) and words.dtype == np.dtype("<i4")
    for row, row_words in zip(bits, words):  # each row is a pack_bits string of its own
        np.testing.assert_array_equal(row_words, pack_bits(row))
    np.testing.assert_array_equal(pack_rows_tf(tf.constant(bits, tf.float32)).numpy(), words)


def test_popcount_table_counts_bits():
    from kbnn.export.bits import popcount16_table

    table = popcount16_table()
    assert table.shape == (65536,) and table.dtype == np.float32
    for i in (0, 1, 3, 255, 256, 0x8001, 0xFFFF, 12345):
        assert table[i] == bin(i).count("1")
