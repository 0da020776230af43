"""The export's verification: non-finite outputs fail, ties are told apart from errors."""

import keras
import numpy as np
import pytest

import kbnn
from kbnn.export import to_tflite, verify
from kbnn.export.verify import VerificationError
from kbnn.layers import QuantDense


def near_tie_model_and_inputs(n=400, flip_weight=False):
    """A BNN whose hidden batch-normalized units are all within float rounding of zero
    on the inputs: Keras and the folded export may round them to different signs."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((64,)), QuantDense(16, kernel_quantizer="ste_sign", use_bias=False),
        keras.layers.BatchNormalization(),
        QuantDense(2, input_quantizer="ste_sign", kernel_quantizer="ste_sign", use_bias=False)])
    rng = np.random.default_rng(0)
    bn = model.layers[1]
    bn.moving_mean.assign(rng.normal(0, 3, 16))
    bn.moving_variance.assign(rng.uniform(0.5, 20, 16))
    bn.gamma.assign(rng.normal(1, 0.5, 16))
    bn.beta.assign(rng.normal(0, 1, 16))
    signs = np.where(np.asarray(model.layers[0].kernel) >= 0, 1.0, -1.0)
    std = np.sqrt(np.asarray(bn.moving_variance) + bn.epsilon)
    zero_at = np.asarray(bn.moving_mean) - np.asarray(bn.beta) * std / np.asarray(bn.gamma)
    x = rng.normal(size=(n, 64)) * 3
    x = (x - (x @ signs - zero_at) @ np.linalg.pinv(signs)).astype("float32")
    if flip_weight:  # the same model with one binary weight the other way
        kernel = np.asarray(model.layers[0].kernel)
        kernel[5, 3] = -kernel[5, 3]
        model.layers[0].kernel.assign(kernel)
    return model, x


def test_sign_ties_at_binarization_are_counted_not_failed():
    model, x = near_tie_model_and_inputs()
    tflite = to_tflite(model)
    expected, actual = model.predict(x, verbose=0), verify.run_tflite(tflite, x)
    assert (np.abs(actual - expected) > 1).any()  # flips happened: the old check failed here
    check = verify.compare(model, tflite, x)
    assert check.boundary_ties > 0
    assert f"{check.boundary_ties} inputs differ only by a sign tie" in str(check)


def test_an_untrained_bnn_with_one_flipped_hidden_unit_passes_with_one_tie():
    # The case of issue 21: one hidden unit's pre-activation within float rounding of
    # zero on one input, so its sign and two logits (by 2.0) differ; it used to fail.
    keras.utils.set_random_seed(3)
    model = kbnn.zoo.bnn_mlp((1024,))
    x = np.random.default_rng(0).random((1000, 28, 28, 1), np.float32)
    check = verify.compare(model, to_tflite(model), x)
    assert check.boundary_ties == 1 and check.max_abs_diff > 1.9


def test_a_wrong_weight_is_not_a_tie():
    model, x = near_tie_model_and_inputs()
    wrong, _ = near_tie_model_and_inputs(flip_weight=True)
    with pytest.raises(VerificationError, match="disagrees with Keras: .* inputs fail"):
        verify.compare(model, to_tflite(wrong), x)


def small_model():
    keras.utils.set_random_seed(1)
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])


def test_non_finite_outputs_or_inputs_fail():
    model = small_model()
    x = np.random.default_rng(0).random((10, 8)).astype("float32")
    tflite = to_tflite(model)
    x[3, 2] = np.nan
    with pytest.raises(VerificationError, match="inputs are not finite .* on 1 of 10 inputs, "
                                                "first at input 3"):
        verify.compare(model, tflite, x)
    kernel = np.asarray(model.layers[0].kernel)
    kernel[0, 0] = np.nan
    model.layers[0].kernel.assign(kernel)
    with pytest.raises(VerificationError, match="Keras outputs are not finite"):
        verify.compare(model, to_tflite(model), np.ones((5, 8), "float32"))


def test_non_finite_litert_outputs_fail(monkeypatch):
    model = small_model()
    monkeypatch.setattr(verify, "run_tflite", lambda tflite, x: np.full((len(x), 4), np.nan))
    with pytest.raises(VerificationError, match="LiteRT outputs are not finite .* on 6 of 6"):
        verify.compare(model, to_tflite(model), np.ones((6, 8), "float32"))


def test_top1_is_judged_only_where_the_top2_margin_exceeds_the_tolerance(monkeypatch):
    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    kernel = np.asarray(model.layers[0].kernel)
    kernel[:, 1] = kernel[:, 0]          # logits 0 and 1 always tie
    model.layers[0].kernel.assign(kernel)
    model.layers[0].bias.assign([5.0, 5.0, -5.0])
    x = np.random.default_rng(3).random((20, 8)).astype("float32")
    expected = model.predict(x, verbose=0)
    swapped = expected.copy()
    swapped[:, 1] += 1e-6                # within tolerance, but LiteRT's top-1 is now 1
    monkeypatch.setattr(verify, "run_tflite", lambda tflite, inputs: swapped)
    check = verify.compare(model, to_tflite(model), x)
    assert check.judged == int((expected[:, 2] > expected[:, 0] + 1e-3).sum()) < 20
    assert "whose top-2 margin exceeds the tolerance" in str(check)


# --- the same check with kbnn's delegate ---------------------------------------------------

def _delegate_built():
    try:
        from kbnn import runtime

        runtime.library_path()
        return True
    except ImportError:
        return False


needs_delegate = pytest.mark.skipif(not _delegate_built(), reason="kbnn.runtime not built")


def _binary_model():
    keras.utils.set_random_seed(1)
    return keras.Sequential([
        keras.Input((32,)), QuantDense(24, kernel_quantizer="ste_sign", use_bias=False),
        QuantDense(3, input_quantizer="ste_sign", kernel_quantizer="ste_sign", use_bias=False)])


@needs_delegate
def test_compare_with_delegate_runs_the_file_with_it():
    model = _binary_model()
    x = np.random.default_rng(2).random((50, 32), np.float32)
    line = verify.compare_with_delegate(model, to_tflite(model), x)
    assert line.startswith("kbnn delegate (2 layers claimed, kernels ")
    assert "verified on 50 inputs: top-1 agreement 100.00%" in line


@needs_delegate
def test_compare_with_delegate_fails_when_the_delegate_disagrees(monkeypatch):
    model = _binary_model()
    x = np.random.default_rng(2).random((50, 32), np.float32)
    run = verify.run_tflite

    def off_by_one_with_delegate(tflite, inputs, delegate=None, **kwargs):
        outputs = run(tflite, inputs, delegate=delegate, **kwargs)
        return outputs + 1.0 if delegate else outputs

    monkeypatch.setattr(verify, "run_tflite", off_by_one_with_delegate)
    verify.compare(model, to_tflite(model), x)  # the stock run still agrees
    with pytest.raises(VerificationError, match="disagrees with Keras"):
        verify.compare_with_delegate(model, to_tflite(model), x)


@needs_delegate
def test_compare_with_delegate_skips_a_file_it_claims_nothing_of():
    model = _binary_model()
    x = np.random.default_rng(2).random((5, 32), np.float32)
    assert verify.compare_with_delegate(model, to_tflite(model, weights="float"), x) == (
        "kbnn delegate: skipped, it claims no layer of this file")


def test_compare_with_delegate_says_when_the_library_is_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("KBNN_DELEGATE_LIBRARY", str(tmp_path / "missing.so"))
    model = _binary_model()
    line = verify.compare_with_delegate(model, to_tflite(model),
                                        np.zeros((2, 32), np.float32))
    assert line.startswith("kbnn delegate: skipped, its library is not built")
    assert "missing.so" in line
