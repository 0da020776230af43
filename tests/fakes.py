"""Tiny stand-ins for Fashion-MNIST files, shared by the tests."""

import gzip
import struct

import numpy as np


def idx_bytes(array, type_code=0x08):
    """Encode `array` as an IDX file (header + big-endian payload)."""
    dtype = {0x08: ">u1", 0x0D: ">f4"}[type_code]
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.asarray(array, dtype).tobytes()


def write_fashion_mnist(directory, n_train=200, n_test=100, seed=0):
    """Write learnable fake IDX files: class k is a bright bar at row 2k."""
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, label in enumerate(labels):
            images[i, 2 * label + 4, 4:24] = 255
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            path = directory / f"{prefix}-{kind}-ubyte.gz"
            path.write_bytes(gzip.compress(idx_bytes(array)))
    return directory
