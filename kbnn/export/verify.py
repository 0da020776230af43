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
"""

import dataclasses

import numpy as np

__all__ = ["LOGIT_ATOL", "LOGIT_RTOL", "VerificationError", "Verification", "run_tflite",
           "op_names", "custom_ops", "compare", "require_litert"]

# Keras and LiteRT add the same +-1 terms in a different order and apply the folded
# batch norm as one multiply-add: logits agree to float32 rounding, scaled by their size.
LOGIT_RTOL = 1e-4
LOGIT_ATOL = 1e-3
# int8 weights with dynamic-range quantization also quantize activations at run time:
# logits move by a few percent of the input's largest logit, so the tolerance is
# relative to that, and top-1 must only agree where Keras' top-1 logit leads the
# runner-up by more than INT8_MARGIN.
INT8_RTOL, INT8_ATOL, INT8_MARGIN = 0.05, 0.25, 1.0


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


def _interpreter(tflite_bytes, num_threads=1):
    return require_litert()(model_content=tflite_bytes, num_threads=num_threads)


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


def run_tflite(tflite_bytes, inputs, num_threads=1, batch_size=256):
    """Outputs of an exported file for `inputs`, run by LiteRT `batch_size` at a time
    (the run's memory grows with the batch: XOR-popcount layers hold B x N x W words).

    A file with a static batch size N runs N inputs at a time, the last chunk
    padded with zeros (their outputs are dropped).
    """
    interpreter = _interpreter(tflite_bytes, num_threads)
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


@dataclasses.dataclass
class Verification:
    samples: int
    top1_agreement: float
    max_abs_diff: float
    tolerance: str

    def __str__(self):
        return (f"verified on {self.samples} inputs: top-1 agreement "
                f"{100 * self.top1_agreement:.2f}%, max |logit diff| {self.max_abs_diff:.2e} "
                f"(tolerance {self.tolerance})")


def compare(model, tflite_bytes, inputs, weights="packed"):
    """Check LiteRT against `model.predict` on `inputs`; raise VerificationError if off.

    Top-1 predictions must agree on every input and logits within
    `LOGIT_RTOL * |keras| + LOGIT_ATOL`. For int8 weights logits must be
    within `INT8_RTOL * max|keras logits of the input| + INT8_ATOL` and top-1
    must agree on every input whose Keras top-1 leads by more than INT8_MARGIN.
    """
    inputs = np.asarray(inputs, np.float32)
    expected = model.predict(inputs, verbose=0, batch_size=256)
    try:
        actual = run_tflite(tflite_bytes, inputs)
    except (RuntimeError, ValueError) as error:
        raise VerificationError(f"LiteRT could not run the exported model: {error}") from error
    rtol, atol = (INT8_RTOL, INT8_ATOL) if weights == "int8" else (LOGIT_RTOL, LOGIT_ATOL)
    diff = np.abs(actual - expected)
    agree = actual.argmax(-1) == expected.argmax(-1)
    result = Verification(len(inputs), float(np.mean(agree)), float(diff.max()),
                          f"rtol {rtol:g}, atol {atol:g}")
    if weights == "int8":
        top2 = np.sort(expected, axis=-1)[:, -2:]
        agree |= top2[:, 1] - top2[:, 0] <= INT8_MARGIN
        result.tolerance += f", top-1 where the margin > {INT8_MARGIN:g}"
    # int8 errors scale with the input's largest logit, float32 ones with each logit.
    scale = np.abs(expected).max(-1, keepdims=True) if weights == "int8" else np.abs(expected)
    bad = diff > rtol * scale + atol
    if not agree.all() or bad.any():
        worst = np.unravel_index(np.argmax(diff), diff.shape)
        raise VerificationError(
            f"Exported model disagrees with Keras: {result}; {int(bad.any(-1).sum())} inputs "
            f"outside the tolerance, worst at input {worst[0]} output {worst[1]} "
            f"(Keras {expected[worst]:.6g}, LiteRT {actual[worst]:.6g})."
        )
    return result
