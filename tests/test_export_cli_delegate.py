"""python -m kbnn.export also verifies the file with kbnn's LiteRT delegate, or says it did not."""

import keras
import pytest

import kbnn
from kbnn.export.__main__ import main as export_main


@pytest.fixture
def saved(tmp_path):
    keras.utils.set_random_seed(3)
    model = keras.Sequential([
        keras.Input((20,)), kbnn.layers.QuantDense(16, kernel_quantizer="ste_sign"),
        kbnn.layers.QuantDense(4, input_quantizer="ste_sign", kernel_quantizer="ste_sign")])
    path = tmp_path / "m.keras"
    model.save(path)
    return path


def test_export_verifies_with_the_delegate_when_built(saved, capsys):
    from kbnn import runtime

    try:
        runtime.library_path()
    except runtime.DelegateNotBuiltError as error:
        pytest.skip(str(error))
    assert export_main(["--tflite", str(saved), "--verify-samples", "30"]) == 0
    out = capsys.readouterr().out
    assert "kbnn delegate (2 layers claimed, kernels " in out
    assert out.count("verified on 30 inputs: top-1 agreement 100.00%") == 2  # stock, delegate
    assert saved.with_suffix(".tflite").exists()


def test_export_says_it_skipped_the_delegate_without_its_library(saved, capsys, monkeypatch):
    monkeypatch.setenv("KBNN_DELEGATE_LIBRARY", str(saved.parent / "none.so"))
    assert export_main(["--tflite", str(saved), "--verify-samples", "30"]) == 0
    assert "kbnn delegate: skipped, its library is not built" in capsys.readouterr().out
    assert saved.with_suffix(".tflite").exists()


def test_export_writes_nothing_when_the_delegate_disagrees(saved, capsys, monkeypatch):
    from kbnn.export import verify

    try:
        from kbnn import runtime

        runtime.library_path()
    except ImportError as error:
        pytest.skip(str(error))
    run = verify.run_tflite
    monkeypatch.setattr(verify, "run_tflite", lambda tflite, inputs, delegate=None, **kw: (
        run(tflite, inputs, delegate=delegate, **kw) * (-1.0 if delegate else 1.0)))
    assert export_main(["--tflite", str(saved), "--verify-samples", "30"]) == 1
    err = capsys.readouterr().err
    assert "disagrees with Keras" in err and "nothing written" in err
    assert not saved.with_suffix(".tflite").exists()
