"""Tests for kbnn.data: the IDX reader, the Fashion-MNIST loader and its three data sources."""

import gzip
import struct

import numpy as np
import pytest

from kbnn import data
from kbnn.data import CLASS_NAMES, IDXFormatError, load_fashion_mnist, read_idx

from fakes import idx_bytes

N_TRAIN, N_TEST = 30, 12


def write(path, payload, compress=True):
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def fake_split(n, offset):
    """Images whose first two pixels encode a unique id (offset + i), labels cycling 0..9."""
    ids = np.arange(offset, offset + n)
    images = np.random.default_rng(offset).integers(0, 256, (n, 28, 28), dtype=np.uint8)
    images[:, 0, 0], images[:, 0, 1] = ids % 256, ids // 256
    return images, (ids % 10).astype(np.uint8)


def image_ids(x):
    """Recover the ids of `fake_split` from float images in [0, 1]."""
    pixels = np.rint(np.asarray(x)[..., 0] * 255).astype(int)
    return pixels[:, 0, 0] + 256 * pixels[:, 0, 1]


@pytest.fixture
def data_dir(tmp_path):
    """A directory holding tiny gzipped Fashion-MNIST-format files (30 train, 12 test)."""
    for split, n, offset in (("train", N_TRAIN, 0), ("t10k", N_TEST, 1000)):
        images, labels = fake_split(n, offset)
        write(tmp_path / f"{split}-images-idx3-ubyte.gz", idx_bytes(images))
        write(tmp_path / f"{split}-labels-idx1-ubyte.gz", idx_bytes(labels))
    return tmp_path


# --- read_idx -----------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize(
    "array",
    [np.arange(24, dtype=np.uint8).reshape(2, 3, 4), np.array([9, 0, 3], np.uint8),
     np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2)],
    ids=["images", "labels", "float32"],
)
def test_read_idx_round_trip(tmp_path, array, compress):
    code = 0x0D if array.dtype == np.float32 else 0x08
    out = read_idx(write(tmp_path / "a.idx", idx_bytes(array, code), compress))
    assert out.dtype == array.dtype and out.dtype.isnative
    np.testing.assert_array_equal(out, array)
    assert not out.flags.writeable  # The cached array cannot be corrupted by a caller.


def test_read_idx_rereads_a_rewritten_file(tmp_path):
    path = write(tmp_path / "a.gz", idx_bytes(np.array([1, 2], np.uint8)))
    assert read_idx(path).tolist() == [1, 2]
    write(path, idx_bytes(np.array([3, 4, 5], np.uint8)))
    assert read_idx(path).tolist() == [3, 4, 5]


GOOD = idx_bytes(np.zeros((2, 3, 3), np.uint8))


@pytest.mark.parametrize(
    "payload, compress, message",
    [
        (b"\x00\x01" + GOOD[2:], True, "bad IDX magic"),
        (b"\x00\x00\x07" + GOOD[3:], True, "bad IDX magic"),
        (b"\x00\x00\x08\x00", True, "bad IDX magic"),  # ndim 0
        (b"\x00\x00", True, "too short"),
        (GOOD[:4] + GOOD[4:10], True, "ends after"),
        (GOOD[:-1], True, "truncated"),
        (GOOD + b"\x00\x00", True, "2 extra trailing bytes"),
        (gzip.compress(GOOD)[:-6], False, "corrupt gzip"),  # Cut inside the trailer.
        (gzip.compress(GOOD)[:-8] + b"\xde\xad\xbe\xef" + gzip.compress(GOOD)[-4:], False,
         "corrupt gzip"),  # Wrong CRC.
    ],
    ids=["magic", "type-code", "ndim-0", "short", "header-cut", "truncated", "extra", "gzip-cut",
         "gzip-crc"],
)
def test_read_idx_rejects_corrupt_files(tmp_path, payload, compress, message):
    path = write(tmp_path / "broken-file.gz", payload, compress)
    with pytest.raises(IDXFormatError, match=message) as info:
        read_idx(path)
    assert "broken-file.gz" in str(info.value)
    assert isinstance(info.value, ValueError)


# --- loader checks on the files -----------------------------------------------------------------


@pytest.mark.parametrize(
    "name, payload, file_in_message, message",
    [
        ("train-images-idx3-ubyte.gz", idx_bytes(np.zeros((N_TRAIN, 28, 28, 1), np.uint8)),
         "train-images", r"expected uint8 images \(N, 28, 28\)"),  # Wrong ndim.
        ("train-images-idx3-ubyte.gz", idx_bytes(np.zeros(N_TRAIN, np.uint8)),
         "train-images", "is it an image file"),  # A label file in the image slot.
        ("train-images-idx3-ubyte.gz", idx_bytes(np.zeros((N_TRAIN, 32, 32), np.uint8)),
         "train-images", "32x32"),
        ("train-labels-idx1-ubyte.gz", idx_bytes(np.zeros((N_TRAIN, 2), np.uint8)),
         "train-labels", "is it a label file"),
        ("train-labels-idx1-ubyte.gz", idx_bytes(np.r_[np.zeros(N_TRAIN - 1), 10].astype(np.uint8)),
         "train-labels", f"label 10 at index {N_TRAIN - 1} is outside 0..9"),
        ("train-labels-idx1-ubyte.gz", idx_bytes(np.zeros(N_TRAIN - 1, np.uint8)),
         "train-labels", f"{N_TRAIN} images but {N_TRAIN - 1} labels"),
    ],
    ids=["image-ndim", "swapped", "image-size", "label-ndim", "label-range", "count-mismatch"],
)
def test_loader_rejects_wrong_contents(data_dir, name, payload, file_in_message, message):
    write(data_dir / name, payload)
    with pytest.raises(IDXFormatError, match=message) as info:
        load_fashion_mnist("train", data_dir=data_dir, as_numpy=True)
    assert file_in_message in str(info.value)


def test_loader_reports_corrupt_file_by_name(data_dir):
    write(data_dir / "t10k-labels-idx1-ubyte.gz", b"not gzip at all", compress=False)
    with pytest.raises(IDXFormatError, match="t10k-labels-idx1-ubyte.gz: bad IDX magic"):
        load_fashion_mnist("test", data_dir=data_dir)


def test_missing_file_names_it_and_the_fix(data_dir):
    (data_dir / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte.gz") as info:
        load_fashion_mnist("test", data_dir=data_dir)
    assert "data_dir" in str(info.value) and "KBNN_DATA_DIR" in str(info.value)
    load_fashion_mnist("train", data_dir=data_dir)  # The train files are still found.


def test_a_file_or_missing_directory_is_named_for_what_it_is(data_dir):
    with pytest.raises(NotADirectoryError, match="is a file, not a directory"):
        load_fashion_mnist("test", data_dir=data_dir / "t10k-images-idx3-ubyte.gz")
    with pytest.raises(FileNotFoundError, match="nowhere does not exist"):
        load_fashion_mnist("test", data_dir=data_dir / "nowhere")


def test_an_unreadable_directory_says_so(data_dir, monkeypatch):
    # Root reads any directory, so the permission check is simulated for this one.
    real_access = data.os.access
    monkeypatch.setattr(data.os, "access", lambda path, mode, **kwargs: (
        False if str(path) == str(data_dir) else real_access(path, mode, **kwargs)))
    with pytest.raises(PermissionError, match="cannot be read .permission denied.*chmod"):
        load_fashion_mnist("test", data_dir=data_dir)


def test_uncompressed_files_are_accepted(data_dir):
    for path in data_dir.glob("*.gz"):
        path.with_suffix("").write_bytes(gzip.decompress(path.read_bytes()))
        path.unlink()
    x, y = load_fashion_mnist("test", data_dir=data_dir, as_numpy=True)
    assert len(x) == len(y) == N_TEST


# --- output format and sources ------------------------------------------------------------------


def test_as_numpy_format_and_exact_values(data_dir):
    x, y = load_fashion_mnist("train", data_dir=str(data_dir), as_numpy=True)
    images, labels = fake_split(N_TRAIN, 0)
    assert x.shape == (N_TRAIN, 28, 28, 1) and x.dtype == np.float32
    assert y.shape == (N_TRAIN,) and y.dtype == np.int32
    np.testing.assert_array_equal(x[..., 0], images.astype(np.float32) / 255)
    np.testing.assert_array_equal(y, labels)
    assert 0 <= x.min() and x.max() <= 1
    x[0, 0, 0, 0] = 7  # Returned arrays are the caller's own; the cache is untouched.
    assert load_fashion_mnist("train", data_dir=data_dir, as_numpy=True)[0][0, 0, 0, 0] != 7


def test_dataset_matches_numpy(data_dir):
    ds = load_fashion_mnist("test", data_dir=data_dir)
    assert ds.element_spec[0].shape == (28, 28, 1) and ds.element_spec[0].dtype.name == "float32"
    assert ds.element_spec[1].shape == () and ds.element_spec[1].dtype.name == "int32"
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds], strict=True)
    x, y = load_fashion_mnist("test", data_dir=data_dir, as_numpy=True)
    np.testing.assert_array_equal(np.stack(xs), x)
    np.testing.assert_array_equal(np.array(ys), y)


def test_env_var_is_used(data_dir, monkeypatch):
    monkeypatch.setenv("KBNN_DATA_DIR", str(data_dir))
    x, _ = load_fashion_mnist("test", as_numpy=True)
    assert len(x) == N_TEST


def test_data_dir_argument_beats_env_var(data_dir, tmp_path_factory, monkeypatch):
    monkeypatch.setenv("KBNN_DATA_DIR", str(tmp_path_factory.mktemp("empty")))
    with pytest.raises(FileNotFoundError):
        load_fashion_mnist("test")
    assert len(load_fashion_mnist("test", data_dir=data_dir, as_numpy=True)[1]) == N_TEST


# --- validation slice, batching, shuffling ------------------------------------------------------


def test_validation_is_the_last_n_training_images(data_dir):
    full_x, full_y = load_fashion_mnist("train", data_dir=data_dir, as_numpy=True)
    kw = dict(data_dir=data_dir, validation_size=8, as_numpy=True)
    fit_x, fit_y = load_fashion_mnist("train", subset="training", **kw)
    val_x, val_y = load_fashion_mnist("train", subset="validation", **kw)
    np.testing.assert_array_equal(fit_x, full_x[:-8])
    np.testing.assert_array_equal(val_x, full_x[-8:])
    np.testing.assert_array_equal(np.r_[fit_y, val_y], full_y)
    assert image_ids(val_x).tolist() == list(range(N_TRAIN - 8, N_TRAIN))
    assert not set(image_ids(fit_x)) & set(image_ids(val_x))


def test_validation_dataset_matches_numpy_slice(data_dir):
    ds = load_fashion_mnist("train", data_dir=data_dir, validation_size=8, subset="validation",
                            batch_size=100)
    (x, _), = list(ds)
    assert image_ids(x).tolist() == list(range(N_TRAIN - 8, N_TRAIN))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(split="validation"), "use 'train' or 'test'"),
        (dict(split="test", validation_size=5, subset="validation"), "cut from 'train' only"),
        (dict(validation_size=5), "pass subset='training'"),
        (dict(subset="fit", validation_size=5), "pass subset='training'"),
        (dict(subset="validation"), "validation_size=0"),
        (dict(subset="validation", validation_size=N_TRAIN), f"1..{N_TRAIN - 1}"),
        (dict(subset="validation", validation_size=0.1), "must be an int"),
        (dict(as_numpy=True, batch_size=4), "drop batch_size/shuffle"),
    ],
)
def test_bad_arguments_explain_the_fix(data_dir, kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_fashion_mnist(data_dir=data_dir, **kwargs)


def test_batching(data_dir):
    shapes = [(x.shape, y.shape) for x, y in load_fashion_mnist("train", data_dir=data_dir,
                                                                 batch_size=8)]
    assert shapes == [((8, 28, 28, 1), (8,))] * 3 + [((6, 28, 28, 1), (6,))]


def test_seeded_shuffle_is_reproducible_and_reshuffles(data_dir):
    def epochs(seed, n=2):
        ds = load_fashion_mnist("train", data_dir=data_dir, batch_size=7, shuffle=True, seed=seed)
        return [np.concatenate([image_ids(x) for x, _ in ds]).tolist() for _ in range(n)]

    first = epochs(seed=3)
    assert first == epochs(seed=3)  # Same seed, same order, epoch after epoch.
    assert sorted(first[0]) == list(range(N_TRAIN))  # A permutation: nothing lost or repeated.
    assert first[0] != list(range(N_TRAIN)) and first[0] != first[1]
    assert first != epochs(seed=4)


# --- tensorflow_datasets path (offline, mocked) -------------------------------------------------


def test_tfds_path_offline(monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    monkeypatch.delenv("KBNN_DATA_DIR", raising=False)
    with tfds.testing.mock_data(num_examples=20):
        x, y = load_fashion_mnist("train", as_numpy=True)
        val = load_fashion_mnist("train", validation_size=5, subset="validation", batch_size=5)
        test = load_fashion_mnist("test", batch_size=64)
        (vx, vy), = list(val)
        (tx, ty), = list(test)
    assert x.shape == (20, 28, 28, 1) and x.dtype == np.float32 and y.dtype == np.int32
    assert 0 <= x.min() and x.max() <= 1 and set(y.tolist()) <= set(range(10))
    assert vx.dtype.name == "float32" and vy.dtype.name == "int32"
    np.testing.assert_array_equal(vx.numpy(), x[-5:])
    np.testing.assert_array_equal(vy.numpy(), y[-5:])
    assert tx.shape == (20, 28, 28, 1)


def test_tfds_download_path_has_its_dependencies():
    # Without data, tfds.load reads the builder's download URLs and checksums first: in a fresh
    # install that needs importlib_resources, which tensorflow_datasets declares only for
    # Python < 3.9 (setup.py brings it). This reads the package's files only; no download.
    tfds = pytest.importorskip("tensorflow_datasets")
    urls = tfds.builder_cls("fashion_mnist").url_infos
    assert any("train-images-idx3-ubyte" in url for url in urls)


def test_tfds_missing_module_names_it_and_the_fix(monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    monkeypatch.delenv("KBNN_DATA_DIR", raising=False)

    def load(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'importlib_resources'",
                                  name="importlib_resources")

    monkeypatch.setattr(tfds, "load", load)
    with pytest.raises(ImportError, match="pip install importlib_resources.*data_dir"):
        load_fashion_mnist("test")


# --- the real data ------------------------------------------------------------------------------


def test_real_fashion_mnist(fashion_mnist_dir):
    real = fashion_mnist_dir  # ../shared/data/fashion_mnist from the repo root (conftest.py).
    x, y = load_fashion_mnist("train", data_dir=real, as_numpy=True)
    tx, ty = load_fashion_mnist("test", data_dir=real, as_numpy=True)
    assert x.shape == (60000, 28, 28, 1) and tx.shape == (10000, 28, 28, 1)
    assert x.dtype == tx.dtype == np.float32 and y.dtype == ty.dtype == np.int32
    assert x.min() == 0 and x.max() == 1 and tx.min() == 0 and tx.max() == 1
    assert np.bincount(y).tolist() == [6000] * 10
    assert np.bincount(ty).tolist() == [1000] * 10
    assert round(float(x.mean(dtype=np.float64)), 4) == 0.2861  # Values from the data README.
    assert round(float(x.std(dtype=np.float64)), 4) == 0.3528
    assert round(float(tx.mean(dtype=np.float64)), 4) == 0.2869
    vx, vy = load_fashion_mnist("train", data_dir=real, validation_size=5000,
                                subset="validation", as_numpy=True)
    np.testing.assert_array_equal(vx, x[-5000:])
    np.testing.assert_array_equal(vy, y[-5000:])
    (bx, by), = load_fashion_mnist("test", data_dir=real, batch_size=16).take(1)
    np.testing.assert_array_equal(bx.numpy(), tx[:16])
    assert len(CLASS_NAMES) == 10 and CLASS_NAMES[9] == "Ankle boot"
    assert data.read_idx(real / "train-labels-idx1-ubyte.gz").shape == (60000,)
