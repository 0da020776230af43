"""Latency and size of exported BNNs beside the float export of the same architecture.

    python benchmarks/tflite_latency.py [--runs 300] [--threads 1 2] [--models mlp1024 ...]

Batch 1, LiteRT (`ai_edge_litert`), median of `--runs` timed invokes after a
warm-up; the designs of one model are timed in interleaved rounds so machine
noise hits them alike. "bnn int8/int4/int2" store the binary kernels as integers
that the stock runtime's XNNPACK multiplies, exactly (`kbnn.export.lowbit`).
"bnn packed+kbnn" is the same packed file run with
kbnn's delegate (`kbnn.runtime`), when its library is built. Each float twin has its BNN's architecture; released
weights are used where saved_models/ has them (latency does not depend on
weight values). Prints one table; ratios are to the float twin measured in the
same run.
"""

import argparse
import time

import numpy as np

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


def build(builder, arguments):
    """The model with released weights if saved_models/ has this architecture, else random
    ones (latency does not depend on weight values)."""
    try:
        return builder(**arguments, weights="fashion_mnist")
    except ValueError:
        return builder(**arguments)


def timer(tflite, threads, delegate=False):
    from ai_edge_litert.interpreter import Interpreter

    if delegate:
        import kbnn.runtime

        interpreter = kbnn.runtime.Interpreter(model_content=tflite, num_threads=threads)
    else:
        interpreter = Interpreter(model_content=tflite, num_threads=threads)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    x = np.random.default_rng(0).random(detail["shape"], np.float32)
    interpreter.set_tensor(detail["index"], x)
    for _ in range(20):
        interpreter.invoke()

    def run(n):
        times = []
        for _ in range(n):
            start = time.perf_counter()
            interpreter.invoke()
            times.append(time.perf_counter() - start)
        return times

    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--runs", type=int, default=300)
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

    rows = []
    for name in args.models:
        bnn, float_twin = (build(*spec) for spec in MODELS[name])
        files = {"float twin": kbnn.export.to_tflite(float_twin)}
        for weights in ("packed", "int8", "int4", "int2"):
            files[f"bnn {weights}"] = kbnn.export.to_tflite(bnn, weights=weights)
        print(f"{name}: exported {', '.join(f'{k} {len(v):,} B' for k, v in files.items())}",
              flush=True)
        designs = dict(files)
        if with_delegate:
            designs["bnn packed+kbnn"] = files["bnn packed"]
        for threads in args.threads:
            timers = {k: timer(v, threads, delegate=k.endswith("+kbnn"))
                      for k, v in designs.items()}
            samples = {k: [] for k in designs}
            for _ in range(args.rounds):
                for key, run in timers.items():
                    samples[key] += run(args.runs // args.rounds)
            medians = {k: 1e6 * float(np.median(v)) for k, v in samples.items()}
            for key, tflite in designs.items():
                rows.append((name, threads, key, len(tflite), medians[key],
                             medians[key] / medians["float twin"],
                             len(tflite) / len(designs["float twin"])))

    print(f"\nbatch 1, median of {args.runs} invokes; ratios to the float twin at the same "
          f"thread count")
    print(f"{'model':<10} {'threads':>7} {'export':<16} {'bytes':>12} {'median us':>10} "
          f"{'latency/float':>14} {'size/float':>11}")
    for name, threads, key, size, us, ratio, size_ratio in rows:
        print(f"{name:<10} {threads:>7} {key:<16} {size:>12,} {us:>10.1f} {ratio:>14.2f} "
              f"{size_ratio:>11.3f}")


if __name__ == "__main__":
    main()
