"""Latency and size of exported BNNs beside float exports of the same architecture.

    python benchmarks/tflite_latency.py [--runs 300] [--threads 1 2] [--models mlp1024 ...]
    python benchmarks/tflite_latency.py --models quicknet birealnet     # 224x224 models

Batch 1, LiteRT (`ai_edge_litert`), median of `--runs` timed invokes after a
warm-up; the files of one model are timed in interleaved rounds so machine
noise hits them alike, and the last column gives the latency ratio of each
round. "bnn packed" is `python -m kbnn.export --tflite`'s file; "bnn
int8/int4/int2" store the binary kernels as integers that the stock
runtime's XNNPACK multiplies, exactly (`kbnn.export.lowbit`); "bnn
packed+kbnn" is the packed file run with kbnn's delegate (`kbnn.runtime`),
when its library is built. Ratios are to the float twin measured in the same
run.

Fashion-MNIST models (mlp128, mlp1024, cnn, mlp3x4096): the float twin is the
zoo's float builder with the BNN's shapes, exported by kbnn; released weights
are used where saved_models/ has them (latency does not depend on weight
values).

Literature models (any `kbnn.zoo.LITERATURE_BUILDERS` name) at 224x224x3 and
1000 classes, random weights: the float twin is the same model with every
quantizer removed (`float_twin`: each Quant layer rebuilt from its config with
its quantizers set to None, i.e. a float convolution or dense layer), and
"mobilenetv2 float" is `keras.applications.MobileNetV2(weights=None)`; both
float files come from the stock TFLite converter (a batch norm right after a
convolution folded into it), the best a float model gets. The BNN files get packed,
packed+kbnn and "int8 (dr)": every kernel int8 by the converter's dynamic-range
quantization, the binary ones exactly (their levels), the real-valued ones
rounded (`dynamic_range_int8`; kbnn's exact `--weights int8` refuses them).
`--runs` defaults to 300 invokes for the Fashion-MNIST models and 30 for the
literature models.
"""

import argparse
import time

import keras
import numpy as np
import tensorflow as tf

import kbnn.export
from kbnn import zoo

# (builder, architecture) of each BNN and of its float twin: the same shapes, so the
# ratio compares designs, not sizes. The CNN is the released one (48-96-192, dense 256).
CNN = dict(filters=(48, 96, 192), dense_units=256)
MODELS = {
    "mlp128": ((zoo.bnn_mlp, dict(hidden_units=(128,))),
               (zoo.float_mlp, dict(hidden_units=(128,)))),
    "mlp1024": ((zoo.bnn_mlp, dict(hidden_units=(1024,))),
                (zoo.float_mlp, dict(hidden_units=(1024,)))),
    "cnn": ((zoo.bnn_cnn, CNN), (zoo.float_cnn, CNN)),
    "mlp3x4096": ((zoo.bnn_mlp, dict(hidden_units=(4096, 4096, 4096))),
                  (zoo.float_mlp, dict(hidden_units=(4096, 4096, 4096)))),
}
LITERATURE = sorted(zoo.LITERATURE_BUILDERS)
DEFAULT_RUNS = {"fashion_mnist": 300, "literature": 30}


def build(builder, arguments):
    """The model with released weights if saved_models/ has this architecture, else random
    ones (latency does not depend on weight values)."""
    try:
        return builder(**arguments, weights="fashion_mnist")
    except ValueError:
        return builder(**arguments)


def float_twin(model):
    """`model` with every quantizer removed: each layer with `*_quantizer` arguments is
    rebuilt from its config with them set to None (QuantConv2D with no quantizers is a
    float Conv2D), every other layer cloned as it is. Weights are fresh.

    >>> twin = float_twin(zoo.quicknet(input_shape=(32, 32, 3), num_classes=10))
    >>> [l.kernel_quantizer for l in twin.layers if hasattr(l, "kernel_quantizer")][:2]
    [None, None]
    """
    def clone(layer):
        config = layer.get_config()
        quantizers = [key for key in config if key.endswith("_quantizer")]
        if not quantizers:
            return layer.__class__.from_config(config)
        return layer.__class__.from_config({**config, **dict.fromkeys(quantizers)})

    return keras.models.clone_model(model, clone_function=clone)


def stock_tflite(model):
    """`model` as a batch-1 float file by the stock TFLite converter (no kbnn plans).

    The weights go in as constants (`stateless_call`): variables that the traced
    function captured would be written as resource variables nobody initializes.
    """
    shape = (1, *model.inputs[0].shape[1:])
    trainable, non_trainable = ([tf.constant(v.value.numpy()) for v in variables] for
                                variables in (model.trainable_variables,
                                              model.non_trainable_variables))
    function = tf.function(
        lambda x: model.stateless_call(trainable, non_trainable, x, training=False)[0],
        input_signature=[tf.TensorSpec(shape, tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [function.get_concrete_function()], model)
    return converter.convert()


def fashion_mnist_files(name):
    """{design: file bytes} of a Fashion-MNIST model and its float twin."""
    bnn, twin = (build(*spec) for spec in MODELS[name])
    files = {"float twin": kbnn.export.to_tflite(twin)}
    for weights in ("packed", "int8", "int4", "int2"):
        files[f"bnn {weights}"] = kbnn.export.to_tflite(bnn, weights=weights)
    return files


def literature_files(name, mobilenet):
    """{design: file bytes} of a literature model at 224x224x3, its float twin and
    MobileNetV2 (`mobilenet`, the bytes of its file, made once per run)."""
    bnn = zoo.LITERATURE_BUILDERS[name]()
    return {"float twin": stock_tflite(float_twin(bnn)), "mobilenetv2 float": mobilenet,
            "bnn packed": kbnn.export.to_tflite(bnn), "bnn int8 (dr)": dynamic_range_int8(bnn)}


def dynamic_range_int8(model):
    """`model` with every kernel int8 by the converter's dynamic-range quantization: binary
    kernels as their levels (exact), real-valued ones rounded. kbnn's exact `--weights
    int8` refuses the literature models' large real-valued kernels (stems, shortcuts),
    which it cannot store exactly; for latency this file is the same kind of computation."""
    plans = kbnn.export.plan_model(model, weights="float")
    function = kbnn.export.graph.inference_function(model, plans)
    return kbnn.export.convert(function, model, weights="int8")


def timer(tflite, threads, delegate=False):
    """A function timing `n` batch-1 invokes of `tflite` (seconds each), after a warm-up;
    with `delegate`, the kbnn delegate's claimed layer count is its `.claimed`."""
    from ai_edge_litert.interpreter import Interpreter

    claimed = None
    if delegate:
        import kbnn.runtime

        loaded = kbnn.runtime.load_delegate()
        interpreter = Interpreter(model_content=tflite, num_threads=threads,
                                  experimental_delegates=[loaded])
    else:
        interpreter = Interpreter(model_content=tflite, num_threads=threads)
    detail = interpreter.get_input_details()[0]
    shape = [1, *detail["shape"][1:]]
    interpreter.resize_tensor_input(detail["index"], shape)
    interpreter.allocate_tensors()
    if delegate:
        claimed = kbnn.runtime.claimed_layers(loaded)
    interpreter.set_tensor(detail["index"], np.random.default_rng(0).random(shape, np.float32))
    for _ in range(20):
        interpreter.invoke()

    def run(n):
        times = []
        for _ in range(n):
            start = time.perf_counter()
            interpreter.invoke()
            times.append(time.perf_counter() - start)
        return times

    run.claimed = claimed
    return run


def measure(name, files, threads, runs, rounds, with_delegate):
    """Table rows of one model: every design timed in `rounds` interleaved rounds."""
    designs = dict(files)
    if with_delegate:
        designs["bnn packed+kbnn"] = files["bnn packed"]
    timers = {k: timer(v, threads, delegate=k.endswith("+kbnn")) for k, v in designs.items()}
    per_round = max(1, runs // rounds)
    samples = {k: [] for k in designs}
    for _ in range(rounds):
        for key, run in timers.items():
            samples[key].append(run(per_round))
    medians = {k: 1e6 * float(np.median(np.concatenate(v))) for k, v in samples.items()}
    round_medians = {k: [np.median(r) for r in v] for k, v in samples.items()}
    rows = []
    for key, tflite in designs.items():
        ratios = [a / b for a, b in zip(round_medians[key], round_medians["float twin"])]
        claimed = timers[key].claimed
        rows.append((name, threads, key, len(tflite), medians[key],
                     medians[key] / medians["float twin"], len(tflite) / len(files["float twin"]),
                     " ".join(f"{r:.2f}" for r in ratios), claimed))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS) + LITERATURE,
                        default=list(MODELS), metavar="MODEL",
                        help=f"any of {', '.join(list(MODELS) + LITERATURE)}")
    parser.add_argument("--runs", type=int, default=None,
                        help="timed invokes per design (default: 300 for the Fashion-MNIST "
                             "models, 30 for the literature models)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    args = parser.parse_args()
    try:
        import kbnn.runtime

        kbnn.runtime.library_path()
        with_delegate = True
    except ImportError as error:
        print(f"no 'bnn packed+kbnn' column: {error}")
        with_delegate = False

    rows, mobilenet = [], None
    for name in args.models:
        literature = name in zoo.LITERATURE_BUILDERS
        if literature:
            if mobilenet is None:
                mobilenet = stock_tflite(keras.applications.MobileNetV2(weights=None))
            files = literature_files(name, mobilenet)
        else:
            files = fashion_mnist_files(name)
        print(f"{name}: exported {', '.join(f'{k} {len(v):,} B' for k, v in files.items())}",
              flush=True)
        runs = args.runs or DEFAULT_RUNS["literature" if literature else "fashion_mnist"]
        for threads in args.threads:
            rows += measure(name, files, threads, runs, args.rounds, with_delegate)
            print(f"{name}: timed at {threads} thread(s), {runs} invokes per design", flush=True)

    print(f"\nbatch 1, median of the invokes; ratios to the float twin at the same thread "
          f"count; per round: the latency ratio of each of the {args.rounds} rounds")
    print(f"{'model':<18} {'threads':>7} {'export':<18} {'bytes':>12} {'median us':>10} "
          f"{'latency/float':>14} {'size/float':>11}  per round")
    for name, threads, key, size, us, ratio, size_ratio, rounds, _ in rows:
        print(f"{name:<18} {threads:>7} {key:<18} {size:>12,} {us:>10.1f} {ratio:>14.2f} "
              f"{size_ratio:>11.3f}  {rounds}")
    claims = [(name, threads, claimed) for name, threads, key, *_, claimed in rows
              if claimed is not None]
    for name, threads, claimed in claims:
        print(f"kbnn delegate on {name} ({threads} thread(s)): claimed {claimed} packed "
              f"layer(s); LiteRT ran the rest")


if __name__ == "__main__":
    main()
