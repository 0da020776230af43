"""Test setup: two logical CPU devices (for MirroredStrategy tests) and paths."""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Logical devices must be configured before TensorFlow initializes its runtime.
_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration()] * 2
)

REPO = pathlib.Path(__file__).resolve().parents[1]
FASHION_MNIST = REPO.parent / "shared" / "data" / "fashion_mnist"


@pytest.fixture(scope="session")
def mirrored_strategy():
    """One MirroredStrategy over the two logical CPUs for the whole session.

    Several strategies in one process can collide on collective-op keys, so
    the tests share this one.
    """
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    assert len(devices) == 2
    return tf.distribute.MirroredStrategy(devices)


@pytest.fixture
def fashion_mnist_dir():
    """The real Fashion-MNIST IDX directory beside the repo, or skip."""
    if not (FASHION_MNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"Fashion-MNIST not found at {FASHION_MNIST}")
    return FASHION_MNIST


@pytest.fixture
def tiny_fashion_mnist(tmp_path):
    """A directory of tiny, learnable Fashion-MNIST-format IDX files."""
    from fakes import write_fashion_mnist

    directory = tmp_path / "fashion_mnist"
    directory.mkdir()
    return write_fashion_mnist(directory)
