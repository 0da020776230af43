"""Fashion-MNIST as `tf.data` pipelines or NumPy arrays, with a held-out validation slice.

Example:

    from kbnn.data import load_fashion_mnist

    train = load_fashion_mnist("train", validation_size=5000, subset="training",
                               batch_size=128, shuffle=True, seed=0)
    val = load_fashion_mnist("train", validation_size=5000, subset="validation", batch_size=512)
    x_test, y_test = load_fashion_mnist("test", as_numpy=True)

Images are float32 `[N, 28, 28, 1]` scaled to [0, 1]; labels are int32 in 0..9 (see
`CLASS_NAMES`). The validation slice is the *last* `validation_size` training images, so model
selection never touches the test split.

Data source, first match wins: the `data_dir` argument, the `KBNN_DATA_DIR` environment
variable (a directory holding the four standard IDX files, gzipped or not), else
`tensorflow_datasets` (`tfds.load("fashion_mnist")`, which downloads on first use).
"""

import functools
import gzip
import math
import os
import zlib

import numpy as np
import tensorflow as tf

__all__ = ["CLASS_NAMES", "IDXFormatError", "load_fashion_mnist", "read_idx"]

CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

DATA_DIR_ENV = "KBNN_DATA_DIR"

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# IDX type code -> big-endian NumPy dtype.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

_REFETCH = "re-download it, or point data_dir / KBNN_DATA_DIR at a good copy"


class IDXFormatError(ValueError):
    """A file is not a well-formed IDX file, or not the Fashion-MNIST data the loader expects."""


def read_idx(path):
    """Read an IDX file (gzipped or plain) into a read-only NumPy array in native byte order.

    Example:

        images = read_idx("train-images-idx3-ubyte.gz")   # uint8, shape (60000, 28, 28)

    The header must be two zero bytes, a known type code (0x08 = uint8, ...), the number of
    dimensions, then one big-endian uint32 per dimension, and the payload must hold exactly the
    product of the dimensions. Any violation, or a corrupt gzip stream, raises `IDXFormatError`
    naming the file. Decoded arrays are cached per file (path, size, modification time).
    """
    path = os.path.abspath(os.fspath(path))
    stat = os.stat(path)
    return _read_idx_cached(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _read_idx_cached(path, size, mtime_ns):
    del size, mtime_ns  # Cache key only: a rewritten file is read again.
    try:
        with open(path, "rb") as f:
            data = f.read()
    except PermissionError:
        raise PermissionError(f"{path}: cannot be read (permission denied); make it readable "
                              f"(chmod u+r), or point data_dir / {DATA_DIR_ENV} at a readable "
                              "copy.") from None
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise IDXFormatError(f"{path}: corrupt gzip stream ({e}); {_REFETCH}.") from None
    if len(data) < 4:
        raise IDXFormatError(
            f"{path}: {len(data)} bytes is too short for an IDX header; {_REFETCH}."
        )
    if data[:2] != b"\0\0" or data[2] not in _IDX_DTYPES or data[3] == 0:
        raise IDXFormatError(
            f"{path}: bad IDX magic number 0x{data[:4].hex()} (expected 0x0000TTNN: type code TT "
            f"in {{{', '.join(f'{c:02x}' for c in _IDX_DTYPES)}}}, NN >= 1 dimensions, e.g. "
            f"0x00000803 for images, 0x00000801 for labels); not an IDX file, {_REFETCH}."
        )
    dtype, ndim = np.dtype(_IDX_DTYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXFormatError(
            f"{path}: header declares {ndim} dimensions but the file ends after {len(data)} bytes; "
            f"{_REFETCH}."
        )
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, offset=4))
    expected = math.prod(shape) * dtype.itemsize
    got = len(data) - header
    if got != expected:
        problem = "is truncated" if got < expected else f"has {got - expected} extra trailing bytes"
        raise IDXFormatError(
            f"{path}: payload {problem}: {got} bytes after the header, expected {expected} for "
            f"shape {shape} of {dtype.name}; {_REFETCH}."
        )
    array = np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))
    array.flags.writeable = False
    return array


def load_fashion_mnist(
    split="train",
    *,
    validation_size=0,
    subset=None,
    data_dir=None,
    batch_size=None,
    shuffle=False,
    seed=None,
    as_numpy=False,
):
    """Load a Fashion-MNIST split as a `tf.data.Dataset` of `(image, label)`, or NumPy arrays.

    Example:

        train = load_fashion_mnist("train", validation_size=5000, subset="training",
                                   batch_size=128, shuffle=True, seed=0)
        x_val, y_val = load_fashion_mnist("train", validation_size=5000, subset="validation",
                                          as_numpy=True)

    Args:
        split: "train" (60,000 images) or "test" (10,000 images).
        validation_size: hold out the last this many training images (0 = none). Requires
            `subset`, like `validation_split` in `keras.utils.image_dataset_from_directory`.
        subset: with `validation_size`, "training" (all but the last `validation_size` images)
            or "validation" (the last `validation_size` images).
        data_dir: directory with the four standard IDX files (`.gz` or not); defaults to
            `$KBNN_DATA_DIR`, and without either the data comes from `tensorflow_datasets`.
        batch_size: batch the dataset (the last batch may be smaller); None yields single examples.
        shuffle: shuffle the whole split, reshuffling every epoch; `seed` makes it reproducible.
        seed: integer seed for `shuffle`.
        as_numpy: return `(x, y)` arrays instead: x float32 `[N, 28, 28, 1]` in [0, 1], y int32.
            Batch and shuffle those with `model.fit(batch_size=..., shuffle=...)`.

    Returns:
        A prefetched `tf.data.Dataset` yielding float32 images `[28, 28, 1]` in [0, 1] and
        int32 labels (with a leading batch axis when `batch_size` is set), or `(x, y)`.
    """
    if split not in _FILES:
        raise ValueError(f"split={split!r}: use 'train' or 'test' (validation comes from "
                         "'train' via validation_size and subset).")
    if validation_size or subset is not None:
        if split != "train":
            raise ValueError(f"validation_size/subset with split={split!r}: the validation "
                             "slice is cut from 'train' only, so model selection never sees the "
                             "test set.")
        if subset not in ("training", "validation"):
            raise ValueError(f"subset={subset!r}: with validation_size, pass subset='training' "
                             "or subset='validation'.")
    if as_numpy and (batch_size is not None or shuffle):
        raise ValueError("as_numpy=True returns whole arrays: drop batch_size/shuffle and pass "
                         "them to model.fit instead.")

    images, labels = _load_split(split, data_dir)
    if subset is not None:
        n = len(labels)
        if not isinstance(validation_size, (int, np.integer)) or not 0 < validation_size < n:
            raise ValueError(f"validation_size={validation_size!r}: must be an int in "
                             f"1..{n - 1} for the {n} training images.")
        cut = n - validation_size
        part = slice(None, cut) if subset == "training" else slice(cut, None)
        images, labels = images[part], labels[part]

    if as_numpy:
        return images.astype(np.float32) / np.float32(255), labels
    if batch_size is None:
        ds = tf.data.Dataset.from_tensor_slices((images, labels))
        if shuffle:
            ds = ds.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
        ds = ds.map(_scaled, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = _batches(images, labels, batch_size, shuffle, seed)
    return ds.prefetch(tf.data.AUTOTUNE)


def _scaled(images, labels):
    return tf.cast(images, tf.float32) / 255.0, labels


def _batches(images, labels, batch_size, shuffle, seed):
    """Batches gathered by index from the whole split, held once as uint8 tensors.

    Shuffling and batching indices, then one gather per batch, costs a
    fraction of slicing, shuffling and re-stacking every image: in a training
    step of the zoo MLPs on this 2-core CPU that was about a tenth of the step.
    """
    images, labels = tf.constant(images), tf.constant(labels)
    ds = tf.data.Dataset.range(len(labels))
    if shuffle:
        ds = ds.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    return ds.map(lambda index: _scaled(tf.gather(images, index), tf.gather(labels, index)),
                  num_parallel_calls=tf.data.AUTOTUNE)


def _load_split(split, data_dir):
    """Return validated `(uint8 images [N, 28, 28, 1], int32 labels [N])` for a split."""
    data_dir = data_dir or os.environ.get(DATA_DIR_ENV) or None
    if data_dir is None:
        images, labels = _load_tfds(split)
        source = image_source = label_source = f"tfds fashion_mnist/{split}"
    else:
        image_source, label_source = (_find(data_dir, name) for name in _FILES[split])
        images, labels = read_idx(image_source), read_idx(label_source)
        source = f"{image_source} / {label_source}"
        if images.ndim != 3 or images.dtype != np.uint8:
            raise IDXFormatError(f"{image_source}: holds {images.dtype} data of shape "
                                 f"{images.shape}, expected uint8 images (N, 28, 28) (magic "
                                 f"0x00000803); is it an image file? {_REFETCH}.")
        images = images[..., None]
    if images.shape[1:] != (28, 28, 1):
        raise IDXFormatError(f"{image_source}: images are {images.shape[1]}x{images.shape[2]}, "
                             f"Fashion-MNIST images are 28x28; {_REFETCH}.")
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise IDXFormatError(f"{label_source}: holds {labels.dtype} data of shape {labels.shape}, "
                             "expected integer labels (N,) (magic 0x00000801); is it a label "
                             f"file? {_REFETCH}.")
    if len(images) != len(labels):
        raise IDXFormatError(f"{source}: {len(images)} images but {len(labels)} labels; the files "
                             "must come from the same split and download.")
    bad = (labels < 0) | (labels >= len(CLASS_NAMES))
    if bad.any():
        i = int(np.argmax(bad))
        raise IDXFormatError(f"{label_source}: label {labels[i]} at index {i} is outside 0..9 "
                             f"({int(bad.sum())} bad labels); {_REFETCH}.")
    return images, labels.astype(np.int32)


def _find(data_dir, name):
    """Return the path of `name` or `name.gz` in `data_dir`, or raise FileNotFoundError."""
    _check_directory(data_dir)
    for candidate in (name + ".gz", name):
        path = os.path.join(data_dir, candidate)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"Fashion-MNIST file {os.path.join(data_dir, name + '.gz')} (or without .gz) not found. "
        f"Put the four IDX files there, or pass data_dir= / set {DATA_DIR_ENV} to the directory "
        f"holding them (unset both to download via tensorflow_datasets)."
    )


def _check_directory(data_dir):
    """Raise an error that says what is wrong with `data_dir` if it is not a readable directory."""
    fix = (f"pass data_dir= / set {DATA_DIR_ENV} to the directory holding the four IDX files "
           "(unset both to download via tensorflow_datasets)")
    if not os.path.exists(data_dir):
        raise FileNotFoundError(f"Fashion-MNIST directory {data_dir} does not exist; {fix}.")
    if not os.path.isdir(data_dir):
        raise NotADirectoryError(f"Fashion-MNIST directory {data_dir} is a file, not a "
                                 f"directory; {fix}.")
    if not os.access(data_dir, os.R_OK | os.X_OK):
        raise PermissionError(f"Fashion-MNIST directory {data_dir} cannot be read (permission "
                              f"denied); make it readable (chmod u+rx), or {fix}.")


def _load_tfds(split):
    """Return `(images, labels)` NumPy arrays of a split from `tfds.load("fashion_mnist")`."""
    try:  # Imported lazily: slow, and only needed without data_dir.
        import tensorflow_datasets as tfds

        ds = tfds.load("fashion_mnist", split=split, as_supervised=True, shuffle_files=False)
    except ModuleNotFoundError as error:
        raise ImportError(
            f"Fashion-MNIST via tensorflow_datasets needs the module {error.name!r}, which is "
            f"not installed: pip install {error.name}, or pass data_dir= / set {DATA_DIR_ENV} "
            "to a directory holding the four IDX files.") from error
    batches = list(tfds.as_numpy(ds.batch(10000)))
    return (np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches]))
