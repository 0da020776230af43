"""Training memory and time of kbnn's BNNs against their float twins.

Training memory is the peak RSS during `fit` minus the RSS just before it (the
process's RSS is mostly TensorFlow and the data), as `kbnn.train` reports it;
peak RSS is printed beside it.
Each run is a fresh process, the runs of a round alternate their order, and the
table gives every round's BNN/float ratios and their medians.

    python benchmarks/memory.py                       # 784-1024-10 and the CNN, 3 rounds
    python benchmarks/memory.py --models mlp --compute float32 bfloat16 auto

`fit_memory(model, x, y, ...)` measures one model in the calling process.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

def fit_memory(model, x, y, **fit_kwargs):
    """`model.fit(x, y, **fit_kwargs)`; returns RSS before, peak RSS during, their difference.

    In MiB, as `kbnn.train.callbacks.TrainingMemory` (what `kbnn.train`
    reports) measures them, with the time of each epoch (the first includes
    tracing the training step). The model must be compiled.
    """
    import keras

    from kbnn.train.callbacks import TrainingMemory

    times = []

    class _EpochTimes(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    memory = TrainingMemory()
    model.fit(x, y, callbacks=[memory, _EpochTimes()], **fit_kwargs)
    return {"before": memory.before_mb, "peak": memory.peak_mb,
            "training": memory.training_mb, "epoch_s": times}


MODELS = {
    "mlp": ("bnn_mlp", {"hidden_units": (1024,)}, "float_mlp", {"hidden_units": (1024,)}),
    "mlp128": ("bnn_mlp", {"hidden_units": (128,)}, "float_mlp", {"hidden_units": (128,)}),
    # The released CNN against a float twin of the same shapes.
    "cnn": ("bnn_cnn", {}, "float_cnn", {"filters": (48, 96, 192), "dense_units": 256}),
}


def _one(builder, kwargs, compute, samples, batch_size, epochs):
    """Measure one model in this process; prints one JSON line."""
    import keras
    import numpy as np

    import kbnn
    from kbnn.train.fit import compile_model

    keras.utils.set_random_seed(0)
    model = getattr(kbnn.zoo, builder)(**kwargs)
    if compute != "float32":
        kbnn.layers.set_compute(model, compute)
    compile_model(model, 1e-3)  # as kbnn.train compiles
    rng = np.random.default_rng(0)
    x = rng.random((samples, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, samples)
    result = fit_memory(model, x, y, batch_size=batch_size, epochs=epochs, verbose=0)
    print(json.dumps(result))


def _run(builder, kwargs, compute, args):
    command = [sys.executable, __file__, "--one", builder, json.dumps(kwargs), compute,
               "--samples", str(args.samples), "--batch-size", str(args.batch_size),
               "--epochs", str(args.epochs)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None):
    from kbnn.train.fit import PRECISION

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["mlp", "cnn"])
    parser.add_argument("--compute", nargs="+", default=[PRECISION],
                        help="the BNN's kbnn.layers.set_compute settings to compare "
                             "(float32, bfloat16, auto; default: kbnn.train's)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--one", nargs=3, metavar=("BUILDER", "KWARGS", "COMPUTE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        builder, kwargs, compute = args.one
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(kwargs).items()}
        return _one(builder, kwargs, compute, args.samples, args.batch_size, args.epochs)

    print(f"{'model':8} {'round':>5} {'run':18} {'train MiB':>10} {'peak MiB':>9} "
          f"{'last epoch s':>12}  ratios to float")
    for name in args.models:
        bnn, bnn_kwargs, twin, twin_kwargs = MODELS[name]
        runs = [("float", twin, twin_kwargs, "float32")]
        runs += [(f"bnn {compute}", bnn, bnn_kwargs, compute) for compute in args.compute]
        ratios = {label: [] for label, *_ in runs[1:]}
        for round_ in range(args.rounds):
            order = runs if round_ % 2 == 0 else runs[::-1]
            results = {label: _run(b, kw, c, args) for label, b, kw, c in order}
            base = results["float"]
            for label, *_ in runs:
                r = results[label]
                line = (f"{name:8} {round_:5} {label:18} {r['training']:10.1f} "
                        f"{r['peak']:9.1f} {r['epoch_s'][-1]:12.2f}")
                if label != "float":
                    ratio = (r["training"] / base["training"], r["peak"] / base["peak"],
                             r["epoch_s"][-1] / base["epoch_s"][-1])
                    ratios[label].append(ratio)
                    line += "  train %.2f  peak %.2f  time %.2f" % ratio
                print(line, flush=True)
        for label, values in ratios.items():
            medians = [statistics.median(v[i] for v in values) for i in range(3)]
            print(f"{name:8} {'med':>5} {label:18} BNN/float: training memory {medians[0]:.2f}, "
                  f"peak RSS {medians[1]:.2f}, s/epoch {medians[2]:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
