"""The bit convention of exported binary weights: the one place it is defined.

>>> import numpy as np
>>> from kbnn.export.bits import pack_bits, unpack_bits
>>> words = pack_bits(np.array([1, 0, 1, 1, 0, 0, 0, 0, 1], bool))
>>> words.dtype, words.shape, [hex(w) for w in words]
(dtype('<i4'), (1,), ['0x10d'])
>>> unpack_bits(words, 9).astype(int).tolist()
[1, 0, 1, 1, 0, 0, 0, 0, 1]

* A binary quantizer maps each output channel's weights to two levels,
  `low` and `high` (`Quantizer.levels`): bit 1 means `high` (+1 for the
  sign quantizers, whose sign(0) = +1), bit 0 means `low`.
* A kernel is flattened in C order *in its export layout* (dense [N, K],
  conv [O, kh, kw, I], depthwise [kh, kw, C, M]) into one bit string.
* Element i is bit i % 8 of byte i // 8 (little-endian bit order), bytes
  are grouped four to a little-endian int32 word.
* The string is padded with zero bits to a multiple of 32; rows are not
  padded, so any size packs at 1 bit per weight plus at most 31 bits.
"""

import numpy as np

__all__ = ["WORD_BITS", "pack_bits", "unpack_bits", "kernel_bits"]

WORD_BITS = 32


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
