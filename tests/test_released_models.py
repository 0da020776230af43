"""Every released model in saved_models/ still scores its recorded test accuracy."""

import json
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

import kbnn  # noqa: F401  (registers kbnn's layers for load_model)
from kbnn.data import load_fashion_mnist

ROOT = pathlib.Path(__file__).resolve().parents[1]
RELEASED = sorted((ROOT / "saved_models").glob("*.json"))


@pytest.mark.parametrize("metrics_path", RELEASED, ids=[p.stem for p in RELEASED])
def test_recorded_test_accuracy(metrics_path, fashion_mnist_dir):
    metrics = json.loads(metrics_path.read_text())
    model = keras.models.load_model(metrics_path.with_suffix(".keras"))
    x, y = load_fashion_mnist("test", data_dir=fashion_mnist_dir, as_numpy=True)
    accuracy = np.mean(model.predict(x, batch_size=1000, verbose=0).argmax(-1) == y)
    assert abs(accuracy - metrics["test_accuracy"]) <= 0.001
    assert (ROOT / "zoo" / "recipes" / f"{metrics['name']}.sh").exists()


def test_models_are_released():
    assert RELEASED, "saved_models/ holds no released model"
    for path in RELEASED:
        assert path.with_suffix(".keras").stat().st_size < 8 * 2**20


def test_zoo_readme_table_is_generated_from_the_metrics():
    check = subprocess.run([sys.executable, str(ROOT / "zoo" / "results_table.py"), "--check"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
