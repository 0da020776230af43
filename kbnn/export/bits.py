"""The bit convention of exported binary weights: the one place it is defined.

>>> import numpy as np
>>> from kbnn.export.bits import pack_bits, unpack_bits
>>> words = pack_bits(np.array([1, 0, 1, 1, 0, 0, 0, 0, 1], bool))
>>> words.dtype, words.shape, [hex(w) for w in words]
(dtype('int32'), (1,), ['0x10d'])
>>> unpack_bits(words, 9).astype(int).tolist()
[1, 0, 1, 1, 0, 0, 0, 0, 1]

* A binary quantizer maps each output channel's weights to two levels,
  `low` and `high` (`Quantizer.levels`): bit 1 means `high` (+1 for the
  sign quantizers, whose sign(0) = +1), bit 0 means `low`.
* A kernel is flattened in C order *in its export layout* (`EXPORT_AXES`:
  dense [N, K], conv [O, kh, kw, I], depthwise [kh, kw, C, M]) into one
  bit string.
* Element i is bit i % 8 of byte i // 8 (little-endian bit order), bytes
  are grouped four to a little-endian int32 word.
* The string is padded with zero bits to a multiple of 32; rows are not
  padded, so any size packs at 1 bit per weight plus at most 31 bits.
* Exception, for dense layers computed by XOR and popcount (`pack_rows`):
  each row [N, K] is its own bit string, padded with zero bits to a multiple
  of 32, and the binarized activations are packed the same way
  (`pack_rows_tf`). Padding bits are 0 on both sides, so they XOR to 0 and
  never count.
"""

import numpy as np
import tensorflow as tf

__all__ = ["WORD_BITS", "EXPORT_AXES", "pack_bits", "unpack_bits", "pack_rows", "kernel_bits",
           "byte_table", "unpack_bits_tf", "pack_rows_tf", "popcount16_table"]

WORD_BITS = 32

# Kernel axes in export order (Keras kernel -> layout packed): the layouts that
# TFLite's FULLY_CONNECTED [N, K], CONV_2D [O, kh, kw, I] and
# DEPTHWISE_CONV_2D [kh, kw, C*M] use natively.
EXPORT_AXES = {"dense": (1, 0), "conv": (3, 0, 1, 2), "depthwise": (0, 1, 2, 3)}


def pack_bits(bits):
    """Pack a boolean array (any shape, C order) into little-endian int32 words."""
    flat = np.asarray(bits, bool).reshape(-1)
    padded = np.zeros(-(-flat.size // WORD_BITS) * WORD_BITS, bool)
    padded[: flat.size] = flat
    return np.packbits(padded, bitorder="little").view("<i4")


def unpack_bits(words, count):
    """The first `count` bits of `pack_bits` output, as a flat boolean array."""
    data = np.asarray(words, "<i4").view(np.uint8)
    return np.unpackbits(data, bitorder="little")[:count].astype(bool)


def pack_rows(bits):
    """Pack each row of a [N, K] boolean array into its own ceil(K / 32) int32 words."""
    bits = np.asarray(bits, bool)
    rows, k = bits.shape
    padded = np.zeros((rows, -(-k // WORD_BITS) * WORD_BITS), bool)
    padded[:, :k] = bits
    return pack_bits(padded).reshape(rows, -1)


def kernel_bits(quantizer, kernel):
    """Bits and per-channel levels of a kernel quantized by a binary quantizer.

    Returns `(bits, low, high)`: `bits` has the kernel's shape and is true
    where the quantized weight equals its channel's `high` level; `low` and
    `high` run along the last (output-channel) axis. Raises if a quantized
    weight is neither level, so Keras and the export can never disagree.
    """
    quantized = np.asarray(quantizer(kernel, training=False))
    low, high = (np.asarray(v, np.float32) for v in quantizer.levels(kernel))
    bits = quantized == high
    if not np.all(bits | (quantized == low)):
        raise ValueError(
            f"{type(quantizer).__name__} produced values other than its levels "
            f"{low.tolist()} / {high.tolist()}; it cannot be stored at 1 bit per weight."
        )
    return bits, low, high


def byte_table(zero, zero_low=False):
    """[256, 8] float32 table, row b = the levels of bits 0..7 of byte b (TensorFlow ops).

    Values are 1 / -1 (or 1 / 0 with `zero_low`). `zero` is an int32 zero
    computed from run-time data, so the converter cannot fold the table into
    a stored constant: it costs no file bytes.
    """
    values = tf.range(256 + zero)[:, None]
    shifts = tf.range(8)[None, :]
    # bit k of b = (b >> k) - 2 * (b >> (k + 1)); TFLite has no BITWISE_AND.
    bit = tf.bitwise.right_shift(values, shifts) - 2 * tf.bitwise.right_shift(values, shifts + 1)
    bit = tf.cast(bit, tf.float32)
    return bit if zero_low else 2.0 * bit - 1.0


def unpack_bits_tf(words, count, shape, table):
    """`unpack_bits` in TensorFlow ops: int32 words -> float levels of `shape`.

    BITCAST to bytes (little-endian, as `pack_bits` stores them), GATHER each
    byte's eight levels from `byte_table`, keep the first `count`, reshape.
    """
    as_bytes = tf.reshape(tf.bitcast(words, tf.uint8), [-1])
    values = tf.reshape(tf.gather(table, tf.cast(as_bytes, tf.int32)), [-1])
    if values.shape[0] != count:
        values = values[:count]
    return tf.reshape(values, shape)


def pack_rows_tf(bits):
    """`pack_rows` in TensorFlow ops: float 0/1 of shape [B, K] -> int32 [B, ceil(K / 32)].

    Each byte is a sum of bits times 1, 2, ..., 128 (exact in float32), cast
    to uint8; four bytes BITCAST to one little-endian word.
    """
    k = bits.shape[-1]
    padded = -(-k // WORD_BITS) * WORD_BITS
    if padded != k:
        bits = tf.pad(bits, [[0, 0], [0, padded - k]])
    powers = tf.constant(2.0 ** np.arange(8), tf.float32)
    as_bytes = tf.reduce_sum(tf.reshape(bits, [-1, padded // 8, 8]) * powers, -1)
    words = tf.reshape(tf.cast(as_bytes, tf.uint8), [-1, padded // WORD_BITS, 4])
    return tf.bitcast(words, tf.int32)


def popcount16_table():
    """float32 [65536]: entry i is the number of 1 bits of i."""
    halves = np.arange(2**16, dtype="<u2").view(np.uint8).reshape(-1, 2)
    return np.unpackbits(halves, axis=1).sum(1).astype(np.float32)
