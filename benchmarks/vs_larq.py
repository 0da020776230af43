"""Train kbnn's BNNs against Larq's and against float twins; print times, accuracy, memory.

    python benchmarks/vs_larq.py --data-dir ../shared/data/fashion_mnist [--rounds 3]
    python benchmarks/vs_larq.py --models mlp1024 --epochs 4 --larq-python /path/to/bin/python

Models (`--models`): `mlp1024` and `mlp128` are the deterministic 784-H-10 BNN
of `kbnn.zoo.bnn_mlp` (dropout, binary dense layers with weight clipping,
batch norm) and its float twin `kbnn.zoo.float_mlp`, each trained with kbnn and
with Larq (the same layers in tf-keras); `cnn` is the released CNN
architecture (`kbnn.zoo.bnn_cnn`: filters 48-96-192, dense 256) against
`kbnn.zoo.float_cnn` of the same shapes, kbnn only, on the first
`--cnn-train-size` training images (its epochs are long on a CPU).

kbnn trains as `kbnn.train` does: `kbnn.train.fit.compile_model` (fused Adam,
its steps per execution), `kbnn.data.load_fashion_mnist`'s pipeline and
`--precision` (the forward product of the binary x binary layers, default
kbnn.train's), with `kbnn.quantizer_ops` where they are built
(`--also-without-quantizer-ops` adds a row without them). Larq trains at its
defaults: Keras 2's `fit` on NumPy arrays, Adam, float32. Every training runs
in a fresh process; each round runs them all, in alternating order (this
machine drifts), with seeds 0, 1, ...

Per training: seconds per epoch (the mean of the epochs after the first,
tracing one), wall-clock and the process's CPU seconds, test accuracy after
the last epoch, peak RSS of the process, training memory (peak RSS during
`fit` minus RSS just before it: `kbnn.train.callbacks.TrainingMemory`) and the
machine's 1-minute load average when the training ended. The tables give
medians over rounds (accuracy: mean) and the ratios of each round. On a shared
machine wall-clock time depends on the cores left free, and not equally for
every model: a float twin's large matrix products use both cores of this
machine, a BNN's many small operations less so, so another process's load
slows the float twin more. CPU seconds hardly depend on that load: compare
the two (and the load column) before trusting a wall-clock ratio. Larq needs Keras 2 (tf-keras)
and numpy < 2: `--larq-python` names a Python that has them, else a virtual
environment is created in benchmarks/.venv-larq on first use. A benchmark,
not a test.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import textwrap

HERE = pathlib.Path(__file__).resolve().parent
LARQ_VENV = HERE / ".venv-larq"
LARQ_PACKAGES = ["tensorflow-cpu==2.16.2", "tf-keras==2.16.0", "larq", "numpy<2"]
MODELS = ("mlp1024", "mlp128", "cnn")
CNN_FILTERS, CNN_DENSE = (48, 96, 192), 256

# One worker for both libraries. It prints one JSON line: epoch seconds (wall and
# process CPU), test accuracy, peak RSS, training memory and the machine's load.
WORKER = textwrap.dedent('''
    import json, os, sys, time
    impl, kind, model_name, data, epochs, batch_size, lr, seed, size, precision = sys.argv[1:11]
    epochs, batch_size, seed, size = int(epochs), int(batch_size), int(seed), int(size)
    lr = float(lr)
    if impl == "larq":
        import numpy as np
        import tensorflow as tf
        import larq as lq
        keras = tf.keras
        keras.utils.set_random_seed(seed)
        arrays = np.load(data)
        bn = lambda: keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-4)
        binary = lambda: dict(kernel_quantizer="ste_sign", use_bias=False,
                              kernel_constraint=lq.constraints.WeightClip(1.0))
        hidden = int(model_name[3:])
        if kind == "float":  # kbnn.zoo.float_mlp's layers
            model = keras.Sequential([
                keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dropout(0.1),
                keras.layers.Dense(hidden, use_bias=False), bn(), keras.layers.ReLU(),
                keras.layers.Dropout(0.2), keras.layers.Dense(10)])
        else:  # kbnn.zoo.bnn_mlp's layers
            model = keras.Sequential([
                keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dropout(0.1),
                lq.layers.QuantDense(hidden, **binary()), bn(), keras.layers.Dropout(0.2),
                lq.layers.QuantDense(10, input_quantizer="ste_sign", **binary()), bn()])
        model.compile(keras.optimizers.Adam(lr),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        fit_args = dict(x=arrays["x_train"][:size], y=arrays["y_train"][:size],
                        batch_size=batch_size)
        test = dict(x=arrays["x_test"], y=arrays["y_test"], batch_size=1000)
        from kbnn_memory import TrainingMemory
    else:
        import keras
        import kbnn
        from kbnn import zoo
        from kbnn.data import load_fashion_mnist
        from kbnn.train.callbacks import TrainingMemory
        from kbnn.train.fit import compile_model
        keras.utils.set_random_seed(seed)
        if model_name == "cnn":
            model = zoo.bnn_cnn(FILTERS, DENSE) if kind == "bnn" else zoo.float_cnn(
                FILTERS, DENSE, dropout=0.2)
        else:
            hidden = (int(model_name[3:]),)
            model = zoo.bnn_mlp(hidden) if kind == "bnn" else zoo.float_mlp(hidden)
        kbnn.layers.set_compute(model, precision)
        compile_model(model, lr)
        split = dict(validation_size=60000 - size, subset="training") if size < 60000 else {}
        fit_args = dict(x=load_fashion_mnist("train", data_dir=data, batch_size=batch_size,
                                             shuffle=True, seed=seed, **split))
        test = dict(x=load_fashion_mnist("test", data_dir=data, batch_size=1000))
    class Timer(keras.callbacks.Callback):
        def on_train_begin(self, logs=None): self.seconds, self.cpu = [], []
        def on_epoch_begin(self, epoch, logs=None):
            self.t, self.c = time.perf_counter(), time.process_time()
        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.t)
            self.cpu.append(time.process_time() - self.c)
    timer, memory = Timer(), TrainingMemory()
    model.fit(**fit_args, epochs=epochs, callbacks=[timer, memory], verbose=0)
    _, accuracy = model.evaluate(**test, verbose=0)
    import resource
    print(json.dumps({"epoch_seconds": timer.seconds, "epoch_cpu_seconds": timer.cpu,
                      "test_accuracy": float(accuracy),
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "training_mb": memory.training_mb, "load": os.getloadavg()[0]}))
''').replace("FILTERS", repr(CNN_FILTERS)).replace("DENSE", repr(CNN_DENSE))


def larq_python(path):
    """The Python that runs Larq: `path`, or benchmarks/.venv-larq (created on first use)."""
    if path:
        return pathlib.Path(path)
    python = LARQ_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {LARQ_VENV} with {' '.join(LARQ_PACKAGES)} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(LARQ_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *LARQ_PACKAGES], check=True)
    return python


def run(python, impl, kind, precision, model, data, args, seed, size, env):
    print(f"  {model} {impl} {kind} {precision} (seed {seed}) ...", flush=True)
    done = subprocess.run(
        [str(python), "-c", WORKER, impl, kind, model, data, str(args.epochs),
         str(args.batch_size), str(args.lr), str(seed), str(size), precision],
        capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"{model} {impl} {kind} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def steady(seconds):
    """Seconds per epoch without the first (tracing) epoch."""
    rest = seconds[1:] or seconds
    return sum(rest) / len(rest)


def median(values):
    values = sorted(values)
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def summarize(runs):
    """{row: medians (accuracy: mean)} of one model's runs {row: [result per round]}."""
    return {row: {"first": median([r["epoch_seconds"][0] for r in rs]),
                  "steady": median([steady(r["epoch_seconds"]) for r in rs]),
                  "cpu": median([steady(r["epoch_cpu_seconds"]) for r in rs]),
                  "load": median([r["load"] for r in rs]),
                  "rss": median([r["peak_rss_mb"] for r in rs]),
                  "training": median([r["training_mb"] for r in rs]),
                  "accuracy": sum(r["test_accuracy"] for r in rs) / len(rs)}
            for row, rs in runs.items()}


RATIOS = (  # (label, numerator row, denominator row, measure)
    ("kbnn BNN / Larq BNN, s/epoch", "kbnn bnn", "larq bnn", "steady"),
    ("kbnn BNN / Larq BNN, CPU s/epoch", "kbnn bnn", "larq bnn", "cpu"),
    ("kbnn BNN / Larq BNN, peak RSS", "kbnn bnn", "larq bnn", "rss"),
    ("kbnn BNN / kbnn float, s/epoch", "kbnn bnn", "kbnn float", "steady"),
    ("kbnn BNN / kbnn float, CPU s/epoch", "kbnn bnn", "kbnn float", "cpu"),
    ("kbnn BNN / kbnn float, peak RSS", "kbnn bnn", "kbnn float", "rss"),
    ("kbnn BNN / kbnn float, training memory", "kbnn bnn", "kbnn float", "training"),
    ("Larq BNN / Larq float, s/epoch", "larq bnn", "larq float", "steady"),
    ("Larq BNN / Larq float, CPU s/epoch", "larq bnn", "larq float", "cpu"),
    ("Larq BNN / Larq float, peak RSS", "larq bnn", "larq float", "rss"),
)


def measure(result, measure_name):
    return {"steady": lambda r: steady(r["epoch_seconds"]),
            "cpu": lambda r: steady(r["epoch_cpu_seconds"]), "rss": lambda r: r["peak_rss_mb"],
            "training": lambda r: r["training_mb"]}[measure_name](result)


def report(model, runs, args, size):
    """Print one model's table and its ratios (median, then each round)."""
    summary = summarize(runs)
    what = f"{size} training images" if size < 60000 else "60000 training images"
    print(f"\n{model}: {args.epochs} epochs of {what}, batch {args.batch_size}, Adam "
          f"{args.lr}, kbnn precision {args.precision}, {args.rounds} round(s): medians "
          f"(accuracy: mean)")
    print(f"{'':<18} {'first epoch s':>13} {'s/epoch':>8} {'CPU s/epoch':>11} {'test acc':>9} "
          f"{'peak RSS MiB':>13} {'training MiB':>13} {'load':>5}")
    for row, s in summary.items():
        print(f"{row:<18} {s['first']:>13.1f} {s['steady']:>8.2f} {s['cpu']:>11.2f} "
              f"{100 * s['accuracy']:>8.2f}% {s['rss']:>13,.0f} {s['training']:>13,.1f} "
              f"{s['load']:>5.2f}")
    for label, top, bottom, name in RATIOS:
        if top in runs and bottom in runs:
            rounds = [measure(a, name) / measure(b, name)
                      for a, b in zip(runs[top], runs[bottom])]
            print(f"{label:<40} {summary[top][name] / summary[bottom][name]:5.2f}   rounds: "
                  + ", ".join(f"{r:.2f}" for r in rounds))
    for row in runs:  # another precision, or TensorFlow's quantizer ops
        for top, bottom in ((row, "kbnn float"), ("kbnn bnn", row)):
            if not (row.startswith("kbnn bnn ") and top in runs and bottom in runs):
                continue
            for name, unit in (("steady", "s/epoch"), ("cpu", "CPU s/epoch")):
                rounds = [measure(a, name) / measure(b, name)
                          for a, b in zip(runs[top], runs[bottom])]
                print(f"{top + ' / ' + bottom + ', ' + unit:<40} "
                      f"{summary[top][name] / summary[bottom][name]:5.2f}   rounds: "
                      + ", ".join(f"{r:.2f}" for r in rounds))
    if "kbnn bnn" in runs and "larq bnn" in runs:
        print(f"{'kbnn BNN - Larq BNN, test accuracy':<40} "
              f"{100 * (summary['kbnn bnn']['accuracy'] - summary['larq bnn']['accuracy']):+5.2f}"
              f" points")
    return summary


def main():
    from kbnn.data import load_fashion_mnist
    from kbnn.layers import PRECISIONS
    from kbnn.train.fit import PRECISION

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("KBNN_DATA_DIR"))
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--epochs", type=int, default=3,
                        help="epochs per training; s/epoch leaves out the first")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--rounds", type=int, default=3,
                        help="train everything this many times (seeds 0, 1, ...), in "
                             "alternating order, and report medians and each round's ratios")
    parser.add_argument("--precision", choices=PRECISIONS, default=PRECISION,
                        help="kbnn's forward product of binary x binary layers")
    parser.add_argument("--also-precision", choices=PRECISIONS,
                        help="add a kbnn BNN row with this precision (row 'kbnn bnn <it>')")
    parser.add_argument("--cnn-train-size", type=int, default=6000,
                        help="training images per CNN epoch (a CNN epoch is long on a CPU)")
    parser.add_argument("--larq-python", default=os.environ.get("KBNN_LARQ_PYTHON"),
                        help="a Python with larq and tf-keras (default: benchmarks/.venv-larq, "
                             "created on first use)")
    parser.add_argument("--also-without-quantizer-ops", action="store_true",
                        help="add a kbnn BNN row trained with TensorFlow's ops for the sign "
                        "quantizers (KBNN_QUANTIZER_OPS=0), not kbnn.quantizer_ops")
    parser.add_argument("--no-larq", action="store_true", help="kbnn rows only")
    parser.add_argument("--json", help="also write every run's results to this file")
    args = parser.parse_args()
    if not args.data_dir:
        parser.error("--data-dir (or $KBNN_DATA_DIR): the Fashion-MNIST IDX directory")

    needs_larq = not args.no_larq and any(m.startswith("mlp") for m in args.models)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")]))}
        runners = {}
        if needs_larq:
            import numpy as np

            x_train, y_train = load_fashion_mnist("train", data_dir=args.data_dir, as_numpy=True)
            x_test, y_test = load_fashion_mnist("test", data_dir=args.data_dir, as_numpy=True)
            npz = os.path.join(tmp, "fashion_mnist.npz")
            np.savez(npz, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
            # The worker imports TrainingMemory from a copy of kbnn's callbacks module:
            # tf-keras cannot import kbnn, and the measure must be the same.
            memory_module = pathlib.Path(tmp, "kbnn_memory.py")
            memory_module.write_text(_memory_source())
            larq_env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "PYTHONPATH": tmp}
            runners["larq"] = (larq_python(args.larq_python), npz, larq_env)
        runners["kbnn"] = (sys.executable, args.data_dir, env)
        for model in args.models:
            size = args.cnn_train_size if model == "cnn" else 60000
            rows = [(impl, kind, args.precision, f"{impl} {kind}", {}) for impl in runners
                    for kind in ("bnn", "float") if not (impl == "larq" and model == "cnn")]
            if args.also_precision and args.also_precision != args.precision:
                rows.append(("kbnn", "bnn", args.also_precision,
                             f"kbnn bnn {args.also_precision}", {}))
            if args.also_without_quantizer_ops:
                rows.append(("kbnn", "bnn", args.precision, "kbnn bnn tf-ops",
                             {"KBNN_QUANTIZER_OPS": "0"}))
            runs = {row[3]: [] for row in rows}
            for seed in range(args.rounds):
                for impl, kind, precision, row, extra in rows if seed % 2 == 0 else rows[::-1]:
                    python, data, run_env = runners[impl]
                    runs[row].append(run(python, impl, kind, precision, model, data, args,
                                         seed, size, {**run_env, **extra}))
            results[model] = {"runs": runs, "summary": report(model, runs, args, size)}
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


def _memory_source():
    """kbnn's TrainingMemory for a tf-keras process: its module with tf.keras for keras."""
    import kbnn.train.callbacks as callbacks

    source = pathlib.Path(callbacks.__file__).read_text()
    return source.replace("import keras\n", "from tensorflow import keras\n", 1)


if __name__ == "__main__":
    main()
