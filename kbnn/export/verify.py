"""Run an exported file in LiteRT and check it against the Keras model.

>>> import keras, numpy as np, kbnn
>>> from kbnn.export.verify import run_tflite, compare
>>> model = keras.Sequential([keras.Input((16,)), kbnn.layers.QuantDense(
...     4, kernel_quantizer="ste_sign", use_bias=False)])
>>> tflite_bytes = kbnn.export.to_tflite(model)
>>> inputs = np.random.default_rng(0).random((300, 16), np.float32)
>>> run_tflite(tflite_bytes, inputs).shape             # LiteRT, builtin ops only
(300, 4)
>>> compare(model, tflite_bytes, inputs).top1_agreement  # raises VerificationError if off
1.0

`compare_with_delegate` runs the same check with the file run by kbnn's LiteRT delegate
(`kbnn.runtime`) where its library is built, and says so; the converter itself never
imports the runtime.
"""

import dataclasses

import numpy as np

__all__ = ["LOGIT_ATOL", "LOGIT_RTOL", "PRESIGN_ATOL", "VerificationError", "Verification",
           "run_tflite", "run_interpreter", "op_names", "custom_ops", "compare",
           "compare_with_delegate", "sign_ties", "require_litert"]

# Keras and LiteRT add the same +-1 terms in a different order and apply the folded
# batch norm as one multiply-add: logits agree to float32 rounding, scaled by their size.
LOGIT_RTOL = 1e-4
LOGIT_ATOL = 1e-3
# Every weights mode is held to these: the integer modes (int8, int4, int2) feed their
# layers inputs that run-time int8 quantization keeps exact (kbnn.export.lowbit).
_GRID_HINT = ("; integer weights modes are exact for model inputs in [0, 1] on the 1/255 "
              "grid (pixels / 255), so verify on such inputs")
# A binary layer's pre-sign activation within LOGIT_RTOL of the unit's largest value
# (plus this) of zero may round to either sign.
PRESIGN_ATOL = 1e-6


class VerificationError(RuntimeError):
    """The exported file disagrees with the Keras model, or does not run on LiteRT."""


def require_litert():
    """Import LiteRT, or raise ImportError saying how to install it."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as error:
        raise ImportError(
            "Running exported files needs the LiteRT runtime: pip install ai-edge-litert "
            "(or pip install -e '.[export]')."
        ) from error
    return Interpreter


def _interpreter(tflite_bytes, num_threads=1, delegate=None):
    return require_litert()(model_content=tflite_bytes, num_threads=num_threads,
                            experimental_delegates=[delegate] if delegate else None)


def _flatbuffer(tflite_bytes):
    from ai_edge_litert import schema_py_generated as schema

    return schema, schema.Model.GetRootAs(tflite_bytes, 0)


def _builtin_codes(schema, model):
    """Each operator code's builtin number (CUSTOM for custom and Flex ops)."""
    return [max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            for code in map(model.OperatorCodes, range(model.OperatorCodesLength()))]


def op_names(tflite_bytes):
    """The operator names of an exported file's main graph, in execution order.

    Read from the flatbuffer (LiteRT runs a subgraph's operators in the order
    they are stored).
    """
    schema, model = _flatbuffer(tflite_bytes)
    names = {code: name for name, code in vars(schema.BuiltinOperator).items()
             if name.isupper()}
    codes = _builtin_codes(schema, model)
    graph = model.Subgraphs(0)
    return [names[codes[graph.Operators(i).OpcodeIndex()]]
            for i in range(graph.OperatorsLength())]


def custom_ops(tflite_bytes):
    """Names of the non-builtin (custom or Flex) operators a file declares; [] is good.

    Read from the flatbuffer's operator codes, where a custom op has the
    builtin code CUSTOM and a name of its own.
    """
    schema, model = _flatbuffer(tflite_bytes)
    return [(model.OperatorCodes(i).CustomCode() or b"?").decode()
            for i, code in enumerate(_builtin_codes(schema, model))
            if code == schema.BuiltinOperator.CUSTOM]


def run_tflite(tflite_bytes, inputs, num_threads=1, batch_size=256, delegate=None):
    """Outputs of an exported file for `inputs`, run by LiteRT `batch_size` at a time
    (the run's memory grows with the batch: XOR-popcount layers hold B x N x W words),
    with `delegate` (e.g. `kbnn.runtime.load_delegate()`) if given.

    A file with a static batch size N runs N inputs at a time, the last chunk
    padded with zeros (their outputs are dropped).
    """
    return run_interpreter(_interpreter(tflite_bytes, num_threads, delegate), inputs,
                           batch_size)


def run_interpreter(interpreter, inputs, batch_size=256):
    """`run_tflite` on an interpreter made elsewhere (e.g. with a delegate loaded).

    >>> import keras, numpy as np, kbnn.export
    >>> from ai_edge_litert.interpreter import Interpreter
    >>> tflite = kbnn.export.to_tflite(keras.Sequential([keras.Input((3,)),
    ...                                                  keras.layers.Dense(2)]))
    >>> run_interpreter(Interpreter(model_content=tflite), np.ones((5, 3))).shape
    (5, 2)
    """
    detail = interpreter.get_input_details()[0]
    output = interpreter.get_output_details()[0]["index"]
    inputs = np.asarray(inputs, np.float32)
    static = int(detail["shape_signature"][0]) if len(detail["shape_signature"]) else -1
    if static > 0:
        batch_size = static
    outputs, shape = [], None
    for start in range(0, len(inputs), batch_size):
        batch = inputs[start:start + batch_size]
        count = len(batch)
        if static > 0 and count < static:
            batch = np.concatenate([batch, np.zeros((static - count, *batch.shape[1:]),
                                                    np.float32)])
        if batch.shape != shape:
            interpreter.resize_tensor_input(detail["index"], batch.shape)
            interpreter.allocate_tensors()
            shape = batch.shape
        interpreter.set_tensor(detail["index"], batch)
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(output)[:count].copy())
    return np.concatenate(outputs)


def _run_signature(tflite_bytes, inputs, batch_size=256):
    """Every named output of a file's signature for `inputs`, run `batch_size` at a time
    (a dynamic-batch file; a whole test set at once can exceed LiteRT's limits)."""
    runner = _interpreter(tflite_bytes).get_signature_runner()
    name = next(iter(runner.get_input_details()))
    chunks = [runner(**{name: inputs[start:start + batch_size]})
              for start in range(0, len(inputs), batch_size)]
    return {key: np.concatenate([chunk[key] for chunk in chunks]) for key in chunks[0]}


@dataclasses.dataclass
class Verification:
    """What `compare` found: agreement, the largest logit difference, and the inputs it
    did not hold against the file (top-1 ties of Keras, sign ties of binary layers)."""

    samples: int
    top1_agreement: float       # over the inputs whose Keras top-2 margin decides top-1
    max_abs_diff: float
    tolerance: str
    judged: int = 0             # inputs whose Keras top-2 margin exceeds the tolerance
    boundary_ties: int = 0      # inputs that differ only through a sign tie (see compare)

    def __str__(self):
        ties = (f"; {self.boundary_ties} inputs differ only by a sign tie at a binary layer"
                if self.boundary_ties else "")
        return (f"verified on {self.samples} inputs: top-1 agreement "
                f"{100 * self.top1_agreement:.2f}% (on the {self.judged} inputs whose top-2 "
                f"margin exceeds the tolerance), max |logit diff| {self.max_abs_diff:.2e} "
                f"(tolerance {self.tolerance}){ties}")


def _require_finite(values, what):
    bad = ~np.isfinite(values).reshape(len(values), -1).all(-1)
    if bad.any():
        raise VerificationError(
            f"{what} not finite (NaN or inf) on {int(bad.sum())} of {len(values)} inputs, "
            f"first at input {int(np.argmax(bad))}; a model or input with non-finite values "
            f"cannot be verified (was it trained with a non-finite learning rate?).")


def compare(model, tflite_bytes, inputs, weights="packed", plans=None, delegate=None):
    """Check LiteRT against `model.predict` on `inputs`; raise VerificationError if off.

    Every output must be finite on both sides. Logits must agree within
    `LOGIT_RTOL * |keras| + LOGIT_ATOL`, and top-1 predictions wherever
    Keras' top-2 margin exceeds that tolerance (closer logits are a tie, not
    a disagreement). The same holds for every `weights` mode; the integer
    modes are exact for model inputs in [0, 1] on the 1/255 grid (pixels).

    An input that fails only because a binary layer's pre-sign activation
    sat within float rounding of zero (Keras and LiteRT add in different
    orders, so one unit's sign may flip) is a boundary tie, counted in the
    result rather than failed: see `sign_ties`. `plans` (from
    `kbnn.export.plan_model`) say which layers binarize their inputs. With
    `delegate`, LiteRT runs the file with it (see `compare_with_delegate`).
    """
    inputs = np.asarray(inputs, np.float32)
    _require_finite(inputs, "the verification inputs are")
    expected = model.predict(inputs, verbose=0, batch_size=256)
    _require_finite(expected, "Keras outputs are")
    try:
        actual = (run_tflite(tflite_bytes, inputs) if delegate is None
                  else run_tflite(tflite_bytes, inputs, delegate=delegate))
    except (RuntimeError, ValueError) as error:
        with_delegate = " with kbnn's delegate" if delegate else ""
        raise VerificationError(f"LiteRT could not run the exported model{with_delegate}: "
                                f"{error}") from error
    _require_finite(actual, "LiteRT outputs are")
    rtol, atol = LOGIT_RTOL, LOGIT_ATOL
    tolerance = rtol * np.abs(expected) + atol
    diff = np.abs(actual - expected)
    top2 = np.sort(expected, axis=-1)[:, -2:]
    margin = np.take_along_axis(tolerance, expected.argmax(-1)[:, None], -1)[:, 0]
    judged = top2[:, 1] - top2[:, 0] > margin
    agree = actual.argmax(-1) == expected.argmax(-1)
    text = f"rtol {rtol:g}, atol {atol:g}"
    result = Verification(len(inputs), float(np.mean(agree[judged])) if judged.any() else 1.0,
                          float(diff.max()), text, judged=int(judged.sum()))
    bad = (diff > tolerance).any(-1)
    failed = bad | (judged & ~agree)
    if failed.any():
        try:
            ties = failed & sign_ties(model, inputs, plans, weights, actual)
        except (RuntimeError, ValueError) as error:
            raise VerificationError(f"LiteRT could not run the exported model with its "
                                    f"pre-sign activations as outputs: {error}") from error
        result.boundary_ties = int(ties.sum())
        failed &= ~ties
    if failed.any():
        worst = np.unravel_index(np.argmax(np.where(failed[:, None], diff, -1)), diff.shape)
        raise VerificationError(
            f"Exported model disagrees with Keras: {result}; {int(failed.sum())} inputs "
            f"fail ({int((failed & bad).sum())} outside the logit tolerance, "
            f"{int((failed & judged & ~agree).sum())} with another top-1), worst at input "
            f"{worst[0]} output {worst[1]} (Keras {expected[worst]:.6g}, LiteRT "
            f"{actual[worst]:.6g}){_GRID_HINT if weights in ('int8', 'int4', 'int2') else ''}."
        )
    return result


def compare_with_delegate(model, tflite_bytes, inputs, weights="packed", plans=None):
    """`compare` with the file run by kbnn's LiteRT delegate; a line saying what was checked.

    Where `kbnn.runtime`'s library is built and claims layers of the file, the
    outputs it computes must pass `compare`'s rules (VerificationError
    otherwise). Where the library is not built, or claims nothing (e.g. the
    float and integer weights modes), nothing is run and the line says so.
    """
    try:
        from kbnn import runtime

        delegate = runtime.load_delegate()
    except ImportError as error:  # DelegateNotBuiltError: no library in this install
        first = str(error).split(". ")[0].rstrip(".")
        return f"kbnn delegate: skipped, its library is not built ({first})"
    except (OSError, ValueError) as error:  # a library LiteRT cannot load
        return f"kbnn delegate: skipped, LiteRT could not load its library ({error})"
    _interpreter(tflite_bytes, delegate=delegate)  # the delegate claims while it prepares
    claimed = runtime.claimed_layers(delegate)
    if claimed == 0:
        return "kbnn delegate: skipped, it claims no layer of this file"
    verification = compare(model, tflite_bytes, inputs, weights, plans, delegate=delegate)
    return (f"kbnn delegate ({claimed} layer{'s' if claimed > 1 else ''} claimed, kernels "
            f"{runtime.kernels_name()}): {verification}")


def sign_ties(model, inputs, plans=None, weights="packed", litert_outputs=None):
    """For each of `inputs`, whether LiteRT and Keras part only by a sign tie.

    The pre-sign activations of every layer with a binary input quantizer
    are compared, Keras (`layer.input`) against LiteRT (the same plans
    emitted with those activations as extra outputs; where `litert_outputs`,
    the outputs of the file under test, are given, only inputs on which that
    probe file gives the same outputs can be ties). Going through the
    binary layers in order, the first one where the two differ decides: if
    every difference there is within a unit's float-rounding bound
    (`LOGIT_RTOL` times the unit's largest |activation| over all `inputs`,
    which stands for the size of the terms summed, plus `PRESIGN_ATOL`) and
    one of them flips a sign, the input is a tie; later layers only carry
    that flip on. Anything else is a real disagreement. Pass many inputs
    (the verification's all), not only the failing ones: one input is a
    poor measure of a unit's size.
    """
    from kbnn.export import convert, graph, plan_model

    plans = plans if plans is not None else plan_model(model, weights=weights)
    function = graph.inference_function(model, plans, probe=True)
    probe_file = convert(function, model, weights)
    if not function.probe_names:
        return np.zeros(len(inputs), bool)
    import keras

    keras_probes = keras.Model(model.inputs, [model.get_layer(name).input for name in
                                              function.probe_names]).predict(inputs, verbose=0)
    if len(function.probe_names) == 1:
        keras_probes = [keras_probes]
    outputs = _run_signature(probe_file, inputs)
    litert_probes = [outputs[f"output_{i + 1}"] for i in range(len(function.probe_names))]
    undecided = np.ones(len(inputs), bool)
    if litert_outputs is not None:  # the probe file computes what the file under test did
        undecided = np.isclose(outputs["output_0"], litert_outputs, LOGIT_RTOL,
                               LOGIT_ATOL).all(-1)
    ties = np.zeros(len(inputs), bool)
    for ours, theirs in zip(keras_probes, litert_probes):
        ours, theirs = ours.reshape(len(inputs), -1), theirs.reshape(len(inputs), -1)
        bound = LOGIT_RTOL * np.abs(ours).max(0) + PRESIGN_ATOL
        differ = (np.abs(ours - theirs) > bound).any(-1) & undecided
        flips = ((ours >= 0) != (theirs >= 0)).any(-1) & undecided & ~differ
        ties |= flips
        undecided &= ~(flips | differ)
    return ties
