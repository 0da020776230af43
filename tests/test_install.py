"""A wheel, installed away from the repository, loads every released model through kbnn.zoo."""

import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import keras
import numpy as np

import kbnn  # noqa: F401  (registers kbnn's layers for load_model)

REPO = pathlib.Path(__file__).resolve().parents[1]

# Runs in a fresh interpreter whose only kbnn is the installed wheel, from another directory.
LOAD_EVERY_RELEASED_MODEL = textwrap.dedent("""
    import json, pathlib, sys
    import numpy as np
    import kbnn
    from kbnn import zoo

    site = pathlib.Path(sys.argv[1])
    assert pathlib.Path(kbnn.__file__).is_relative_to(site), kbnn.__file__
    assert zoo.models_dirs() == [site / "kbnn" / "zoo" / "saved_models"], zoo.models_dirs()
    assert kbnn.quantizer_ops.available(), "the wheel has no quantizer ops"
    x = np.load(sys.argv[2])
    predictions = {}
    for name, config in zoo.list_models().items():
        arguments = {k: v for k, v in config.items() if k != "builder"}
        model = zoo.BUILDERS[config["builder"]](**arguments, weights="fashion_mnist")
        predictions[name] = model.predict(x, verbose=0)
    np.savez(sys.argv[3], **predictions)
""")


def _working_tree(destination):
    """Copy the files a clone of the working tree has (tracked or not ignored) to `destination`."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard",
                             "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = REPO / name
        if source.is_file():  # a tracked file deleted in the working tree is gone
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


def _run(*command, cwd=REPO, env=None):
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{command}:\n{result.stdout}\n{result.stderr}"
    return result


def test_wheel_installed_elsewhere_loads_every_released_model(tmp_path):
    source = _working_tree(tmp_path / "source")
    _run(sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
         "--quiet", "-w", str(tmp_path / "wheel"))
    (wheel,) = (tmp_path / "wheel").glob("kbnn-*.whl")
    site = tmp_path / "site"
    _run(sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(site),
         str(wheel))
    assert not (site / "saved_models").exists()  # the models are package data, not a top dir

    x = np.random.default_rng(0).random((8, 28, 28, 1)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("KBNN_MODELS_DIR", "PYTHONPATH")}
    env["PYTHONPATH"] = str(site)
    _run(sys.executable, "-c", LOAD_EVERY_RELEASED_MODEL, str(site), str(tmp_path / "x.npy"),
         str(tmp_path / "predictions.npz"), cwd=elsewhere, env=env)

    predictions = np.load(tmp_path / "predictions.npz")
    released = sorted(path.stem for path in (REPO / "saved_models").glob("*.json"))
    assert sorted(predictions.files) == released
    for name in released:
        # The installed copy computes what the repository's file does.
        model = keras.models.load_model(REPO / "saved_models" / f"{name}.keras")
        np.testing.assert_array_equal(predictions[name], model.predict(x, verbose=0),
                                      err_msg=name)
