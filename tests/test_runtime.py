"""kbnn.runtime: the delegate loads into the installed LiteRT, claims packed layers, agrees."""

import ctypes
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

import kbnn  # noqa: F401  (registers kbnn's layers for load_model)
import kbnn.export
from kbnn.export import description, verify

runtime = pytest.importorskip("kbnn.runtime")
pytest.importorskip("ai_edge_litert")
try:
    runtime.library_path()
except runtime.DelegateNotBuiltError as error:  # a checkout without a C build
    pytest.skip(str(error), allow_module_level=True)

from ai_edge_litert import schema_py_generated as schema  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
SAVED = ROOT / "saved_models"
RELEASED_BNNS = sorted(p.stem for p in SAVED.glob("bnn_*.keras"))


def run(tflite, x, delegate=None, batch=256, threads=1):
    """Outputs of `tflite` for x, with the kbnn delegate if given."""
    interpreter = Interpreter(model_content=tflite, num_threads=threads,
                              experimental_delegates=[delegate] if delegate else None)
    return verify.run_interpreter(interpreter, np.ascontiguousarray(x, np.float32), batch)


def assert_agree(stock, fast):
    """The issue's bar: |diff| <= 1e-5 x max|logit| + 1e-5 per input, top-1 everywhere."""
    bound = 1e-5 * np.abs(stock).max(-1, keepdims=True) + 1e-5
    worst = np.abs(fast - stock) - bound
    assert worst.max() <= 0, f"{int((worst > 0).any(-1).sum())} inputs off, worst by {worst.max()}"
    assert np.array_equal(stock.argmax(-1), fast.argmax(-1))


@pytest.fixture(scope="module")
def mlp128_file():
    model = keras.models.load_model(SAVED / "bnn_mlp_128_deterministic.keras")
    return kbnn.export.to_tflite(model)


def test_delegate_loads_into_the_runtime_and_claims_both_packed_layers(mlp128_file):
    # Pins the declared C ABI: a wrong struct layout would not find the layers (or crash).
    delegate = runtime.load_delegate()
    x = np.random.default_rng(0).random((7, 28, 28, 1), np.float32)
    fast = run(mlp128_file, x, delegate)
    assert runtime.claimed_layers(delegate) == 2
    assert_agree(run(mlp128_file, x), fast)


def test_whole_mlp_is_one_delegate_kernel_and_bit_identical(mlp128_file, capfd):
    # The run-time zero and byte table, the flatten and the sign between the layers are
    # claimed too: one partition holds every node, and the outputs are the stock ones, bit
    # for bit, for any batch (NaN pixels reach the sign as NaN: -1, as GREATER_EQUAL says).
    x = np.random.default_rng(1).random((9, 28, 28, 1), np.float32)
    x[1] = 0.0
    x[2, 3, 4, 0] = np.nan
    delegate = runtime.load_delegate(verbose=2)
    fast = run(mlp128_file, x, delegate, batch=4)  # batches 4, 4, 1: resized twice
    err = capfd.readouterr().err
    assert "15 shape-only nodes" in err
    assert "partition 0: 36 nodes" in err and "partition 1" not in err
    assert np.array_equal(run(mlp128_file, x, batch=4), fast, equal_nan=True)


def test_interpreter_uses_the_delegate_with_the_interpreters_threads(mlp128_file):
    interpreter = runtime.Interpreter(model_content=mlp128_file, num_threads=2)
    interpreter.allocate_tensors()
    interpreter.invoke()
    delegate = interpreter._delegates[0]
    assert runtime.claimed_layers(delegate) == 2
    assert runtime.delegate_threads(delegate) == 2


@pytest.mark.parametrize("module", [runtime, description], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    import doctest

    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_layout_versions_agree():
    lib = ctypes.CDLL(runtime.library_path())
    assert lib.kbnn_layout_version() == runtime.LAYOUT_VERSION == description.LAYOUT_VERSION


def test_file_naming_its_layout_version_is_claimed(mlp128_file):
    tagged = description.with_layout(mlp128_file)
    assert description.layout_version(tagged) == description.LAYOUT_VERSION
    assert description.layout_version(mlp128_file) is None
    delegate = runtime.load_delegate()
    x = np.random.default_rng(1).random((3, 28, 28, 1), np.float32)
    assert_agree(run(mlp128_file, x), run(tagged, x, delegate))
    assert runtime.claimed_layers(delegate) == 2


def test_unknown_layout_version_is_left_to_the_runtime(mlp128_file):
    future = description.with_layout(mlp128_file, version=description.LAYOUT_VERSION + 1)
    delegate = runtime.load_delegate()
    x = np.random.default_rng(2).random((3, 28, 28, 1), np.float32)
    np.testing.assert_array_equal(run(future, x, delegate), run(mlp128_file, x))
    assert runtime.claimed_layers(delegate) == 0


def _with_int32_constant(tflite, old_shape, new_values):
    """`tflite` with the int32 constant of shape `old_shape` replaced by `new_values`."""
    model = schema.ModelT.InitFromPackedBuf(bytearray(tflite), 0)
    for tensor in model.subgraphs[0].tensors:
        if list(tensor.shape) == list(old_shape) and tensor.type == schema.TensorType.INT32 \
                and model.buffers[tensor.buffer].data is not None:
            values = np.asarray(new_values, "<i4")
            tensor.shape = list(values.shape)
            model.buffers[tensor.buffer].data = np.frombuffer(values.tobytes(), np.uint8)
            break
    else:
        raise AssertionError(f"no int32 constant of shape {old_shape}")
    import flatbuffers

    builder = flatbuffers.Builder(len(tflite) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def test_packed_words_of_the_wrong_size_are_declined(mlp128_file):
    # The 10 x 128 output layer is stored in 40 words; one word more no longer fits it.
    words = np.arange(41, dtype=np.int32)
    bad = _with_int32_constant(mlp128_file, [40], words)
    delegate = runtime.load_delegate()
    interpreter = Interpreter(model_content=bad, experimental_delegates=[delegate])
    assert runtime.claimed_layers(delegate) == 1  # the first layer only
    with pytest.raises((RuntimeError, ValueError)):  # the stock kernels refuse the sizes too
        interpreter.allocate_tensors()
        interpreter.invoke()


def test_a_byte_table_the_delegate_cannot_verify_fails_clearly(mlp128_file):
    # Shift amounts 1..8 -> 2..9: the file then computes another byte table at run time.
    bad = _with_int32_constant(mlp128_file, [1, 8], np.arange(2, 10).reshape(1, 8))
    run(bad, np.zeros((1, 28, 28, 1), np.float32))  # the stock runtime still runs it
    delegate = runtime.load_delegate()
    with pytest.raises(RuntimeError, match="byte table"):
        run(bad, np.zeros((1, 28, 28, 1), np.float32), delegate)


def test_truncated_file_fails_at_load_with_a_message(mlp128_file):
    with pytest.raises(ValueError):
        runtime.Interpreter(model_content=mlp128_file[: len(mlp128_file) // 2])


def test_load_delegate_rejects_bad_options():
    with pytest.raises(ValueError, match="num_threads"):
        runtime.load_delegate(num_threads=0)
    with pytest.raises(ValueError, match="Unknown kernel level"):
        runtime.load_delegate(max_kernel_level="sse9")


def test_missing_library_says_how_to_build(monkeypatch, tmp_path):
    monkeypatch.setenv("KBNN_DELEGATE_LIBRARY", str(tmp_path / "nothing.so"))
    with pytest.raises(runtime.DelegateNotBuiltError, match="not a file"):
        runtime.library_path()
    monkeypatch.delenv("KBNN_DELEGATE_LIBRARY")
    monkeypatch.setattr(runtime, "_HERE", str(tmp_path))
    with pytest.raises(runtime.DelegateNotBuiltError, match="pip install -e"):
        runtime.library_path()


def test_info_prints_the_library_and_kernels():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-m", "kbnn.runtime", "--info"],
                            capture_output=True, text=True, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr
    assert runtime.library_path() in result.stdout
    assert f"kernels selected {runtime.kernels_name()}" in result.stdout
    assert result.stderr == ""  # TensorFlow's start-up lines hidden, as for the other CLIs


# --- kernels against the scalar reference ------------------------------------------------

@pytest.mark.parametrize("level", list(runtime.KERNEL_LEVELS))
def test_kernels_agree_with_the_reference(level):
    if level not in runtime.cpu_kernel_levels():
        pytest.skip(f"this CPU does not run {level} kernels")
    assert runtime.kernels_name(level) == level
    lib = ctypes.CDLL(runtime.library_path())
    lib.kbnn_run_kernel.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
                                    ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t,
                                    ctypes.c_void_p]
    rng = np.random.default_rng(runtime.KERNEL_LEVELS[level])
    for words, rows in [(8, 1), (8, 3), (16, 67), (64, 130)]:
        w = rng.integers(0, 2**63, (rows, words), dtype=np.uint64)
        w[0] = 0
        x = rng.integers(0, 2**63, words, dtype=np.uint64)
        xf = rng.normal(size=words * 64).astype(np.float32)
        bits = np.unpackbits(w.view(np.uint8), bitorder="little").reshape(rows, -1)
        xbits = np.unpackbits(x.view(np.uint8), bitorder="little")
        for which, expected in [(0, (bits != xbits).sum(1)), (1, (bits & xbits).sum(1))]:
            out = np.zeros(rows, np.int32)
            assert lib.kbnn_run_kernel(runtime.KERNEL_LEVELS[level], which, x.ctypes.data,
                                       w.ctypes.data, words, rows, out.ctypes.data) == 0
            np.testing.assert_array_equal(out, expected)
    # ordered sums: blocks of 16 rows, per input the rows' bits; float32, input order
    for k, blocks in [(1, 1), (13, 2), (784, 5), (100, 13)]:  # 13 = 4 + 4 + 4 + 1 blocks
        masks = rng.integers(0, 2**16, (blocks, k), dtype=np.uint16)
        xf = rng.normal(size=k).astype(np.float32)
        bits = (masks[:, None, :] >> np.arange(16)[None, :, None]) & 1  # [blocks, 16, k]
        for which, low in [(2, -1.0), (3, 0.0)]:
            levels = np.where(bits == 1, 1.0, low).astype(np.float32).reshape(-1, k)
            expected = np.zeros(blocks * 16, np.float32)
            for i in range(k):  # one rounding per input, in order, as the stock kernel
                expected = (expected + levels[:, i] * xf[i]).astype(np.float32)
            out = np.zeros(blocks * 16, np.float32)
            assert lib.kbnn_run_kernel(runtime.KERNEL_LEVELS[level], which, xf.ctypes.data,
                                       masks.ctypes.data, k, blocks, out.ctypes.data) == 0
            np.testing.assert_array_equal(out, expected)
    assert lib.kbnn_run_kernel(0, 0, x.ctypes.data, w.ctypes.data, 7, 1, out.ctypes.data) == -1


# --- the sign path: real-valued layers read only as signs ---------------------------------

class Quantized(ctypes.Structure):
    """kbnn_quantized of csrc/bitkernels.h."""
    _fields_ = [("e", ctypes.c_int), ("offset", ctypes.c_int32), ("sum_q", ctypes.c_int64),
                ("sum_abs", ctypes.c_double), ("weighted_abs", ctypes.c_double),
                ("residual", ctypes.c_double)]


class SignRule(ctypes.Structure):
    """kbnn_sign_rule of csrc/bitkernels.h."""
    _fields_ = [("offset", ctypes.c_int32), ("mul", ctypes.c_int32), ("sum_q", ctypes.c_int64),
                ("scale", ctypes.c_double), ("err", ctypes.c_double)]


def _sign_library():
    lib = ctypes.CDLL(runtime.library_path())
    ptr = ctypes.c_void_p
    lib.kbnn_run_kernel.argtypes = [ctypes.c_int, ctypes.c_int, ptr, ptr, ctypes.c_size_t,
                                    ctypes.c_size_t, ptr]
    lib.kbnn_run_quantize.argtypes = [ctypes.c_int, ptr, ctypes.c_size_t, ptr, ptr,
                                      ctypes.POINTER(Quantized)]
    lib.kbnn_run_decide.argtypes = [ctypes.c_int, ptr, ptr, ptr, ptr, ctypes.c_size_t,
                                    ctypes.POINTER(SignRule), ptr, ptr]
    lib.kbnn_run_decide.restype = ctypes.c_long
    lib.kbnn_sign_rule_for.argtypes = [ctypes.POINTER(Quantized), ctypes.c_size_t, ctypes.c_int]
    lib.kbnn_sign_rule_for.restype = SignRule
    return lib


def _quantize(lib, level, x):
    groups = (len(x) + 3) // 4
    lo, hi = np.zeros(groups, np.uint32), np.zeros(groups, np.uint32)
    q = Quantized()
    ok = lib.kbnn_run_quantize(level, x.ctypes.data, len(x), lo.ctypes.data, hi.ctypes.data,
                               ctypes.byref(q))
    u = (lo.view(np.uint8).astype(np.int64) + 256 * hi.view(np.uint8).astype(np.int64))
    return ok, u, q


def _inputs(rng):
    """Input rows of every kind the sign path meets: pixels, uniform, signed, odd lengths."""
    yield (rng.integers(0, 256, 784) / np.float32(255)).astype(np.float32)
    yield rng.random(784, np.float32)
    yield (rng.normal(size=301) * 7).astype(np.float32)
    yield np.where(rng.random(97) < 0.5, 0, rng.random(97) * 1e-20).astype(np.float32)
    yield np.array([3.0], np.float32)


SIGN_LEVELS = ["reference", "avx512-vpopcntdq"]  # levels with sign kernels (bitkernels.c)


@pytest.mark.parametrize("level", SIGN_LEVELS)
def test_sign_kernels_agree_with_the_reference(level):
    if level not in runtime.cpu_kernel_levels():
        pytest.skip(f"this CPU does not run {level} kernels")
    lib, lv = _sign_library(), runtime.KERNEL_LEVELS[level]
    rng = np.random.default_rng(7)
    for x in _inputs(rng):
        ok, u, q = _quantize(lib, lv, x)
        ok0, u0, q0 = _quantize(lib, 0, x)
        assert ok == ok0 == 1
        np.testing.assert_array_equal(u, u0)
        assert (q.e, q.offset, q.sum_q) == (q0.e, q0.offset, q0.sum_q)
        qi = u[:len(x)] - q.offset
        assert q.sum_q == qi.sum() and np.all(u[len(x):] == 0)
        assert np.abs(qi).max() < 2**16 and (q.offset == 0) == bool((x >= 0).all())
        x64 = x.astype(np.float64)
        for got, exact in [(q.sum_abs, np.abs(x64).sum()),
                           (q.weighted_abs, (np.abs(x64) * np.arange(len(x), 0, -1)).sum()),
                           (q.residual, np.abs(x64 - qi * 2.0**q.e).sum())]:
            assert exact * (1 - 2**-40) <= got <= exact * (1 + 1e-4) + 1e-300  # float lanes
    for bad in ([np.nan], [np.inf, 1.0], [1e31], [1e-31], [0.0, 0.0]):
        assert _quantize(lib, lv, np.array(bad, np.float32))[0] == 0
    # masked sums: bit 4j + t of group c of block b is row 16b + j at input 4c + t
    for groups, blocks in [(1, 1), (196, 5), (33, 8), (7, 13)]:
        planes = rng.integers(0, 2**32, 2 * groups, dtype=np.uint32)
        masks = rng.integers(0, 2**64, (blocks, groups), dtype=np.uint64)
        u = planes[:groups].view(np.uint8).astype(np.int64) + 256 * planes[groups:].view(
            np.uint8).astype(np.int64)
        bits = np.unpackbits(masks.view(np.uint8), bitorder="little").reshape(blocks, groups, 16, 4)
        expected = np.einsum("bcjt,ct->bj", bits.astype(np.int64), u.reshape(groups, 4))
        out = np.zeros(blocks * 16, np.int32)
        assert lib.kbnn_run_kernel(lv, 4, planes.ctypes.data, masks.ctypes.data, groups, blocks,
                                   out.ctypes.data) == 0
        np.testing.assert_array_equal(out, expected.reshape(-1))
    # sign packing: y >= 0, so -0 gives 1 and NaN 0
    for n in (1, 15, 64, 1000):
        y = rng.normal(size=n).astype(np.float32)
        y[:: 7] = -0.0
        y[3::11] = np.nan
        words = (n + 511) // 512 * 8
        out = np.full(words, 2**64 - 1, np.uint64)
        assert lib.kbnn_run_kernel(lv, 5, y.ctypes.data, out.ctypes.data, n, words,
                                   out.ctypes.data) == 0
        expected = np.zeros(words * 64, np.uint8)
        expected[:n] = y >= 0
        np.testing.assert_array_equal(np.unpackbits(out.view(np.uint8), bitorder="little"),
                                      expected)
    # decisions: the same rows decided the same way as the reference
    rows = 203
    p = rng.integers(0, 2**20, rows).astype(np.int32)
    ones = rng.integers(0, 300, rows).astype(np.int32)
    direction = rng.choice([-1.0, 1.0], rows).astype(np.float32)
    rule = SignRule(offset=1000, mul=2, sum_q=2**19, scale=2.0**-10, err=3.0)
    s = ((p.astype(np.float64) - 1000.0 * ones) * 2 - 2**19) * 2.0**-10 * direction
    at = (s + rng.normal(size=rows) * 4).astype(np.float32)
    at[:5] = [-np.inf, np.inf, -np.inf, np.inf, 0.0]
    results = []
    for level_ in (lv, 0):
        y = np.zeros(rows, np.float32)
        undecided = np.full(rows, -1, np.int32)
        n = lib.kbnn_run_decide(level_, p.ctypes.data, ones.ctypes.data, direction.ctypes.data,
                                at.ctypes.data, rows, ctypes.byref(rule), y.ctypes.data,
                                undecided.ctypes.data)
        results.append((y, undecided[:n]))
    (y, undecided), (y0, undecided0) = results
    np.testing.assert_array_equal(undecided, undecided0)
    np.testing.assert_array_equal(undecided, np.nonzero(np.abs(s - at) <= 3.0)[0])
    decided = np.setdiff1d(np.arange(rows), undecided)
    np.testing.assert_array_equal(y[decided], y0[decided])
    np.testing.assert_array_equal(y[decided], np.where(s >= at, 1.0, -1.0)[decided])


def test_sign_rule_bounds_the_stock_ordered_float32_sum():
    # The heart of the sign path: for +-1 and 0/1 weights, the float32 sum in input order (one
    # rounding per input, as the stock FULLY_CONNECTED) lies within err of the integer sum.
    lib = _sign_library()
    rng = np.random.default_rng(11)
    for x in _inputs(rng):
        ok, u, q = _quantize(lib, 0, x)
        qi = (u[:len(x)] - q.offset).astype(np.float64)
        for zero_low in (0, 1):
            rule = lib.kbnn_sign_rule_for(ctypes.byref(q), len(x), zero_low)
            bits = rng.integers(0, 2, (500, len(x)))
            w = np.where(bits == 1, 1.0, 0.0 if zero_low else -1.0).astype(np.float32)
            ordered = np.zeros(len(w), np.float32)
            for i in range(len(x)):
                ordered = (ordered + w[:, i] * x[i]).astype(np.float32)
            integer = (w.astype(np.float64) @ qi) * rule.scale
            assert np.all(np.abs(ordered - integer) <= rule.err), (zero_low, len(x))
            assert rule.err < 1e-3 * max(np.abs(x).sum(), 1e-30)  # and it is tight


@pytest.mark.parametrize("level", list(runtime.KERNEL_LEVELS))
@pytest.mark.parametrize("kernel_quantizer", ["ste_sign", "ste_heaviside"])
def test_sign_path_decides_ties_as_stock(level, kernel_quantizer, capfd):
    # Inputs of a few levels make many sums land exactly on the sign's threshold (0): those
    # rows the bound cannot decide are summed in input order; every output is the stock one.
    # (Levels without sign kernels sum every row in input order; a NaN makes a 0/1 layer's
    # sums NaN there too, as the stock 0 * NaN does.)
    if level not in runtime.cpu_kernel_levels():
        pytest.skip(f"this CPU does not run {level} kernels")
    keras.utils.set_random_seed(5)
    model = keras.Sequential([
        keras.Input((64,)),
        kbnn.layers.QuantDense(48, kernel_quantizer=kernel_quantizer, use_bias=False),
        kbnn.layers.QuantDense(10, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                               use_bias=False)])
    tflite = kbnn.export.to_tflite(model)
    x = np.random.default_rng(6).choice(np.float32([-1, -0.5, 0, 0.5, 1]), (300, 64))
    x[:100] = np.abs(x[:100])  # and rows quantized without an offset
    x[5, 3] = np.nan  # a row the sign path declines
    delegate = runtime.load_delegate(max_kernel_level=level, verbose=True)
    fast = run(tflite, x, delegate)
    assert ("sign path" in capfd.readouterr().err) == (level in SIGN_LEVELS)
    assert runtime.claimed_layers(delegate) == 2
    assert np.array_equal(run(tflite, x), fast, equal_nan=True)


def test_sign_path_split_across_threads_is_bit_identical(capfd):
    # 784 x 4096 is large enough to be split over the interpreter's two threads, each with
    # its own part of the scratch; inputs on a 0.5 grid give exact ties in both parts.
    from kbnn import zoo

    model = zoo.bnn_mlp(hidden_units=(4096,), seed=0)
    tflite = kbnn.export.to_tflite(model)
    x = np.random.default_rng(8).choice(np.float32([0, 0.5, 1]), (6, 28, 28, 1))
    delegate = runtime.load_delegate(verbose=True)
    fast = run(tflite, x, delegate, threads=2)
    assert "sign path" in capfd.readouterr().err and runtime.delegate_threads(delegate) == 2
    assert np.array_equal(run(tflite, x, threads=2), fast)


# --- the released models and the property test ---------------------------------------------

@pytest.mark.parametrize("name", RELEASED_BNNS)
def test_released_bnn_agrees_on_the_test_split(name, fashion_mnist_dir):
    from kbnn.data import load_fashion_mnist

    # Every packed layer is claimed (the first layer, on pixels, too: summed in the stock
    # kernel's order, or decided by the sign path's bound), and the logits on the whole
    # test split are the stock ones, bit for bit (batches of 256 and a last one of 16).
    model = keras.models.load_model(SAVED / f"{name}.keras")
    result = kbnn.export.export_tflite(model)
    x, _ = load_fashion_mnist("test", data_dir=fashion_mnist_dir, as_numpy=True)
    delegate = runtime.load_delegate()
    fast = run(result.tflite, x, delegate)
    assert runtime.claimed_layers(delegate) == sum(plan.packed for plan in result.plans)
    np.testing.assert_array_equal(fast, run(result.tflite, x))


def test_xor_popcount_layers_are_claimed_and_agree():
    from kbnn import zoo

    model = zoo.bnn_mlp(hidden_units=(96, 80, 40), seed=0)
    result = kbnn.export.export_tflite(model, xor_popcount_min_weights=1)
    assert "xor-popcount" in {p.design for p in result.plans}
    delegate = runtime.load_delegate()
    x = np.random.default_rng(3).random((50, 28, 28, 1), np.float32)
    fast = run(result.tflite, x, delegate)
    assert runtime.claimed_layers(delegate) == 4
    assert_agree(run(result.tflite, x), fast)


@pytest.mark.parametrize("seed", range(16))
def test_random_models_agree_with_the_delegate(seed):
    from test_export import random_model

    model, x = random_model(seed)
    tflite = kbnn.export.to_tflite(model)
    delegate = runtime.load_delegate()
    fast = run(tflite, x, delegate)
    assert runtime.claimed_layers(delegate) >= 2  # the two dense layers
    assert_agree(run(tflite, x), fast)
