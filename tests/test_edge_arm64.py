"""The released models' exports give on an (emulated) ARM64 CPU what they give on x86.

`edge/arm64/run.sh` runs the stock aarch64 LiteRT (the official ai-edge-litert wheel)
under qemu on an emulated Cortex-A53; the x86 side runs the same script
(`edge/arm64/run_model.py`) in this process with the x86 wheel. Both get the first 200
Fashion-MNIST test images.

Measured here (ai-edge-litert 2.3.0 on both sides, 200 images), as a fraction of each
image's largest |logit|: packed, int8 and int4 files of both models give bit-identical
logits; float differs in the last bits (4.5e-6 MLP, 2.8e-6 CNN; max |diff| 1.4e-4 and
7.4e-5), as XNNPACK's aarch64 and x86 float kernels sum in different orders; int2 by
float32 rounding (2.4e-7 MLP, 1.3e-7 CNN). RTOL holds the allowed difference per mode
(about 20x the measured one), every mode of kbnn.export.WEIGHT_MODES is checked, and a
new mode without a measured tolerance fails until one is added; top-1 must be equal
everywhere. and top-1 equal everywhere. kbnn's delegate, cross-built for aarch64
(kbnn/runtime/build_aarch64.sh), gives the stock aarch64 runtime's outputs bit for bit.

Without qemu-aarch64-static or a prepared environment (`edge/arm64/prepare.sh`) the tests
skip, except in CI (`CI=true`), where .ci/run prepares it and a missing piece fails.
Emulation is slow (the packed CNN takes minutes), so the ARM runs start together, two at
a time, and only for the tests that were selected.
"""

import concurrent.futures
import importlib.util
import os
import pathlib
import re
import shutil
import subprocess

import numpy as np
import pytest

from kbnn.export import WEIGHT_MODES

REPO = pathlib.Path(__file__).resolve().parents[1]
RUN_SH = REPO / "edge" / "arm64" / "run.sh"
MODELS = {"mlp": "bnn_mlp_1024_deterministic", "cnn": "bnn_cnn_shortcuts_deterministic"}
MODES = WEIGHT_MODES
IMAGES = 200
# Allowed |ARM64 - x86| / the image's largest |x86 logit|, per mode; measured in brackets.
RTOL = {"packed": 0.0, "int8": 0.0, "int4": 0.0,  # [0.0, 0.0, 0.0]
        "int2": 5e-6,  # [2.4e-7]
        "float": 1e-4}  # [4.5e-6]
EMULATION_TIMEOUT = 1800  # seconds for one file on 200 images; the packed CNN needs ~200

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def require(condition, reason):
    """Skip on a developer's machine, fail in CI, where everything must be prepared."""
    if condition:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: .ci/run should have prepared it)")
    pytest.skip(reason)


def _run_model_module():
    spec = importlib.util.spec_from_file_location("run_model", RUN_SH.parent / "run_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _arm64_ready():
    """None if edge/arm64/run.sh works, else why not."""
    try:
        check = subprocess.run([str(RUN_SH), "--check"], capture_output=True, text=True,
                               timeout=300)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"edge/arm64/run.sh --check failed: {error}"
    if check.returncode != 0:
        return f"no emulated ARM64 environment: {check.stderr.strip()[-300:]}"
    return None


@pytest.fixture(scope="module")
def arm64_environment():
    reason = _arm64_ready()
    require(reason is None, reason)


@pytest.fixture(scope="module")
def test_images():
    from conftest import FASHION_MNIST
    from kbnn.data import load_fashion_mnist

    require((FASHION_MNIST / "t10k-images-idx3-ubyte.gz").exists(),
            f"Fashion-MNIST not found at {FASHION_MNIST}")
    images, _ = load_fashion_mnist("test", data_dir=FASHION_MNIST, as_numpy=True)
    return np.ascontiguousarray(images[:IMAGES], np.float32)


def _selected_cases(session):
    """The (model, mode) pairs of this module's selected comparison tests."""
    cases = []
    for item in session.items:
        callspec = getattr(item, "callspec", None)
        if (item.module.__name__ == __name__ and callspec and "model" in callspec.params
                and "mode" in callspec.params):
            cases.append((callspec.params["model"], callspec.params["mode"]))
    return cases


@pytest.fixture(scope="module")
def outputs(request, arm64_environment, test_images, tmp_path_factory):
    """{(model, mode): future of (x86 logits, arm64 logits)} for every selected case."""
    import keras

    import kbnn  # noqa: F401  (registers the layers)
    import kbnn.export

    directory = tmp_path_factory.mktemp("arm64")
    inputs = directory / "inputs.npy"
    np.save(inputs, test_images)
    run_model = _run_model_module()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
    jobs = {}
    loaded = {}
    for model_key, mode in _selected_cases(request.session):
        if model_key not in loaded:
            loaded[model_key] = keras.models.load_model(
                REPO / "saved_models" / f"{MODELS[model_key]}.keras")
        tflite = directory / f"{model_key}_{mode}.tflite"
        tflite.write_bytes(kbnn.export.to_tflite(loaded[model_key], weights=mode))
        arm_out = directory / f"{model_key}_{mode}.arm64.npy"
        arm = pool.submit(subprocess.run, [str(RUN_SH), str(tflite), str(inputs), str(arm_out)],
                          capture_output=True, text=True, timeout=EMULATION_TIMEOUT)
        x86 = run_model.run(run_model.build_interpreter(str(tflite)), test_images)
        jobs[model_key, mode] = (x86, arm, arm_out)
    yield jobs
    pool.shutdown(wait=True, cancel_futures=True)


def _arm64_logits(job):
    x86, arm, arm_out = job
    result = arm.result()
    assert result.returncode == 0, f"edge/arm64/run.sh failed:\n{result.stderr[-3000:]}"
    return x86, np.load(arm_out)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("model", sorted(MODELS))
def test_arm64_matches_x86(outputs, model, mode):
    x86, arm = _arm64_logits(outputs[model, mode])
    assert arm.shape == x86.shape == (IMAGES, 10)
    assert mode in RTOL, f"no ARM64 tolerance measured for export mode {mode!r}: run this " \
                         f"test with RTOL[{mode!r}] = 0, read the difference, and add it"
    np.testing.assert_array_equal(arm.argmax(1), x86.argmax(1))
    if RTOL[mode] == 0:
        np.testing.assert_array_equal(arm, x86, err_msg=f"{model} {mode}: not bit-identical")
    else:
        worst = float((np.abs(arm - x86) / np.abs(x86).max(axis=1, keepdims=True)).max())
        assert worst <= RTOL[mode], f"{model} {mode}: ARM64 differs by {worst:.2e} of the " \
                                    f"largest logit (allowed {RTOL[mode]:.0e})"


def test_run_sh_rejects_wrong_input_shape(arm64_environment, tmp_path):
    """A bad input file fails with exit status != 0, a message naming the shapes, no output."""
    import keras

    import kbnn  # noqa: F401
    import kbnn.export

    model = keras.Sequential([keras.Input((16,)), kbnn.layers.QuantDense(
        4, kernel_quantizer="ste_sign", use_bias=False)])
    tflite = tmp_path / "tiny.tflite"
    tflite.write_bytes(kbnn.export.to_tflite(model))
    np.save(tmp_path / "good.npy", np.ones((3, 16), np.float32))
    np.save(tmp_path / "bad.npy", np.ones((3, 15), np.float32))
    good = subprocess.run([str(RUN_SH), str(tflite), str(tmp_path / "good.npy"),
                           str(tmp_path / "out.npy")], capture_output=True, text=True,
                          timeout=300)
    assert good.returncode == 0, good.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"),
                                  _x86(tflite, np.ones((3, 16), np.float32)))
    bad = subprocess.run([str(RUN_SH), str(tflite), str(tmp_path / "bad.npy"),
                          str(tmp_path / "bad_out.npy")], capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode != 0
    assert "(15,)" in bad.stderr and "(16,)" in bad.stderr
    assert not (tmp_path / "bad_out.npy").exists()


def test_static_batch_runs_in_chunks(arm64_environment, tmp_path):
    """A file with a static batch of 4 runs 10 rows as 3 padded chunks, same as x86.

    Inputs and weights are both binarized, so every output is an exact integer sum."""
    import keras

    import kbnn  # noqa: F401
    import kbnn.export

    model = keras.Sequential([keras.Input((16,)), kbnn.layers.QuantDense(
        4, input_quantizer="ste_sign", kernel_quantizer="ste_sign", use_bias=False)])
    tflite = tmp_path / "b4.tflite"
    tflite.write_bytes(kbnn.export.to_tflite(model, batch_size=4))
    rows = np.random.default_rng(0).random((10, 16), np.float32)
    np.save(tmp_path / "in.npy", rows)
    result = subprocess.run([str(RUN_SH), str(tflite), str(tmp_path / "in.npy"),
                             str(tmp_path / "out.npy")], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    expected = _x86(tflite, rows)
    assert expected.shape == (10, 4)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), expected)


def _x86(tflite, rows):
    run_model = _run_model_module()
    return run_model.run(run_model.build_interpreter(str(tflite)), rows)


BUILD_AARCH64 = REPO / "kbnn" / "runtime" / "build_aarch64.sh"


@pytest.mark.parametrize("model_key", ["mlp", "cnn"])
def test_delegate_aarch64_matches_stock_runtime(arm64_environment, test_images, tmp_path,
                                                model_key):
    """kbnn's delegate, cross-built for aarch64, claims every packed layer of the released
    MLP and shortcut CNN on ARM64 (NEON dense and conv kernels, which x86 cannot run) and
    gives the stock runtime's outputs bit for bit. The reference is x86 LiteRT: the packed
    files run bit-identically on stock ARM64 (test_arm64_matches_x86)."""
    if not BUILD_AARCH64.exists():
        pytest.skip("kbnn/runtime/build_aarch64.sh (the delegate's aarch64 cross-build) "
                    "is not in this checkout")
    compiler = os.environ.get("CC", "aarch64-linux-gnu-gcc")
    require(shutil.which(compiler) is not None,
            f"no aarch64 C compiler {compiler!r} to build kbnn's delegate for ARM64 "
            "(apt-get install gcc-aarch64-linux-gnu)")
    library = tmp_path / "libkbnn_delegate.so"
    build = subprocess.run(["sh", str(BUILD_AARCH64), str(library)], capture_output=True,
                           text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    import keras

    import kbnn  # noqa: F401
    import kbnn.export

    model = keras.models.load_model(REPO / "saved_models" / f"{MODELS[model_key]}.keras")
    result = kbnn.export.export_tflite(model, weights="packed")
    packed_layers = sum(plan.packed for plan in result.plans)
    tflite = tmp_path / f"{model_key}_packed.tflite"
    tflite.write_bytes(result.tflite)
    np.save(tmp_path / "in.npy", test_images)
    run = subprocess.run([str(RUN_SH), str(tflite), str(tmp_path / "in.npy"),
                          str(tmp_path / "delegate.npy"), "--delegate", str(library)],
                         capture_output=True, text=True, timeout=EMULATION_TIMEOUT)
    assert run.returncode == 0, run.stderr[-3000:]
    claimed = re.search(r"kbnn delegate: (\d+) layers claimed, (\S+) kernels", run.stderr)
    assert claimed, f"the delegate did not report itself: {run.stderr[-2000:]}"
    assert (int(claimed[1]), claimed[2]) == (packed_layers, "neon")
    np.testing.assert_array_equal(np.load(tmp_path / "delegate.npy"),
                                  _x86(tflite, test_images))
