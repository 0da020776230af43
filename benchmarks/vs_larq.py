"""Train the same deterministic 784-1024-10 BNN with kbnn and with Larq; compare.

    python benchmarks/vs_larq.py --data-dir ../shared/data/fashion_mnist [--epochs 10] [--rounds 3]

Larq needs Keras 2 (tf-keras) and numpy < 2, so it runs in its own virtual
environment, created here on first use (benchmarks/.venv-larq: tensorflow-cpu
2.16.2, tf-keras 2.16.0, larq). Both trainings get the same architecture
(kbnn.zoo.bnn_mlp: dropout, binary dense layers with weight clipping, batch
norm), data, batch size, optimizer (Adam, fixed learning rate) and epochs, each
in a fresh process; kbnn trains with `kbnn.optimizers.Adam` (the fused
update Keras 2 had), and once more with Keras 3's own Adam to show what that
is worth, and each framework's float twin (`kbnn.zoo.float_mlp`'s layers), so
each library's BNN/float ratio comes from the same run. Prints seconds per
epoch (first epoch apart), peak RSS and test accuracy of each, and the
ratios. A benchmark, not a test.
"""

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import textwrap

HERE = pathlib.Path(__file__).resolve().parent
LARQ_VENV = HERE / ".venv-larq"
LARQ_PACKAGES = ["tensorflow-cpu==2.16.2", "tf-keras==2.16.0", "larq", "numpy<2"]

# One worker for both libraries: the layer classes differ, nothing else.
WORKER = textwrap.dedent('''
    import json, resource, sys, time
    import numpy as np
    impl, data_path, epochs, batch_size, lr, seed, spe = sys.argv[1:8]
    epochs, batch_size, lr, seed, spe = int(epochs), int(batch_size), float(lr), int(seed), int(spe)
    if impl.startswith("larq"):
        import tensorflow as tf
        import larq as lq
        keras = tf.keras
        QuantDense = lq.layers.QuantDense
        clip = lambda: lq.constraints.WeightClip(1.0)
        Adam = keras.optimizers.Adam
    else:
        import keras
        import kbnn
        QuantDense = kbnn.layers.QuantDense
        clip = lambda: kbnn.constraints.WeightClip(1.0)
        # kbnn's Adam (fused update) unless asked for Keras 3's own, to show the difference
        Adam = keras.optimizers.Adam if impl == "kbnn-keras-adam" else kbnn.optimizers.Adam
    keras.utils.set_random_seed(seed)
    data = np.load(data_path)
    bn = lambda: keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-4)
    binary = lambda: dict(kernel_quantizer="ste_sign", kernel_constraint=clip(), use_bias=False)
    if impl.endswith("-float"):  # the float twin (kbnn.zoo.float_mlp) in the same framework
        model = keras.Sequential([
            keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dropout(0.1),
            keras.layers.Dense(1024, use_bias=False), bn(), keras.layers.ReLU(),
            keras.layers.Dropout(0.2), keras.layers.Dense(10)])
    else:
        model = keras.Sequential([
            keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dropout(0.1),
            QuantDense(1024, **binary()), bn(), keras.layers.Dropout(0.2),
            QuantDense(10, input_quantizer="ste_sign", **binary()), bn()])
    model.compile(Adam(lr),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], steps_per_execution=spe)
    class Timer(keras.callbacks.Callback):
        def on_train_begin(self, logs=None): self.seconds = []
        def on_epoch_begin(self, epoch, logs=None): self.t = time.perf_counter()
        def on_epoch_end(self, epoch, logs=None): self.seconds.append(time.perf_counter() - self.t)
    timer = Timer()
    model.fit(data["x_train"], data["y_train"], batch_size=batch_size, epochs=epochs,
              callbacks=[timer], verbose=0)
    _, accuracy = model.evaluate(data["x_test"], data["y_test"], batch_size=1000, verbose=0)
    print(json.dumps({"epoch_seconds": timer.seconds, "test_accuracy": float(accuracy),
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
''')


def larq_python():
    python = LARQ_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {LARQ_VENV} with {' '.join(LARQ_PACKAGES)} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(LARQ_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *LARQ_PACKAGES], check=True)
    return python


IMPLS = ("kbnn", "larq", "kbnn-keras-adam", "kbnn-float", "larq-float")


def run(python, impl, data_path, args, seed, env=None):
    print(f"training with {impl} ({args.epochs} epochs, seed {seed}) ...", flush=True)
    done = subprocess.run(
        [str(python), "-c", WORKER, impl, data_path, str(args.epochs), str(args.batch_size),
         str(args.lr), str(seed), str(args.steps_per_execution)],
        capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"{impl} run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def steady(seconds):
    rest = seconds[1:] or seconds
    return sum(rest) / len(rest)


def median(values):
    values = sorted(values)
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def main():
    import os

    import numpy as np

    from kbnn.data import load_fashion_mnist

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("KBNN_DATA_DIR"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--rounds", type=int, default=1,
                        help="train every library this many times (seeds 0, 1, ...), in "
                             "alternating order, and report medians: this machine drifts")
    parser.add_argument("--steps-per-execution", type=int, default=1,
                        help="Keras' steps_per_execution, the same for every training")
    parser.add_argument("--impls", nargs="+", choices=IMPLS, default=list(IMPLS),
                        help="which trainings to run (kbnn and larq are always run); the "
                             "-float rows train each framework's float twin, so BNN/float "
                             "ratios come from the same run")
    args = parser.parse_args()

    x_train, y_train = load_fashion_mnist("train", data_dir=args.data_dir, as_numpy=True)
    x_test, y_test = load_fashion_mnist("test", data_dir=args.data_dir, as_numpy=True)
    python = larq_python()
    with tempfile.TemporaryDirectory() as tmp:
        data_path = os.path.join(tmp, "fashion_mnist.npz")
        np.savez(data_path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
        legacy = {**os.environ, "TF_USE_LEGACY_KERAS": "1"}
        runners = {impl: (python, legacy) if impl.startswith("larq") else (sys.executable, None)
                   for impl in IMPLS if impl in {"kbnn", "larq", *args.impls}}
        rounds = {impl: [] for impl in runners}
        for seed in range(args.rounds):
            order = list(runners) if seed % 2 == 0 else list(reversed(runners))
            for impl in order:
                rounds[impl].append(run(runners[impl][0], impl, data_path, args, seed,
                                        env=runners[impl][1]))

    summary = {impl: {"first": median([r["epoch_seconds"][0] for r in rs]),
                      "steady": median([steady(r["epoch_seconds"]) for r in rs]),
                      "rss": median([r["peak_rss_mb"] for r in rs]),
                      "accuracy": sum(r["test_accuracy"] for r in rs) / len(rs)}
               for impl, rs in rounds.items()}
    print(f"\n784-1024-10 deterministic BNN, {args.epochs} epochs, batch {args.batch_size}, "
          f"Adam {args.lr}, steps_per_execution {args.steps_per_execution}, {args.rounds} "
          f"round(s): medians of seconds and RSS, mean accuracy")
    print(f"{'':<16} {'first epoch s':>14} {'s/epoch':>9} {'peak RSS MiB':>13} {'test acc':>9}")
    for impl, s in summary.items():
        print(f"{impl:<16} {s['first']:>14.1f} {s['steady']:>9.2f} {s['rss']:>13,.0f} "
              f"{100 * s['accuracy']:>8.2f}%")
    k, l = summary["kbnn"], summary["larq"]
    print(f"kbnn/larq: s/epoch {k['steady'] / l['steady']:.2f}, peak RSS {k['rss'] / l['rss']:.2f}, "
          f"test accuracy {100 * (k['accuracy'] - l['accuracy']):+.2f} points")
    if args.rounds > 1:
        per_round = [steady(a["epoch_seconds"]) / steady(b["epoch_seconds"])
                     for a, b in zip(rounds["kbnn"], rounds["larq"])]
        print("kbnn/larq s/epoch per round: " + ", ".join(f"{r:.2f}" for r in per_round))
    if "kbnn-keras-adam" in summary:
        plain = summary["kbnn-keras-adam"]
        print(f"kbnn with Keras 3's unfused Adam / larq: s/epoch "
              f"{plain['steady'] / l['steady']:.2f}")
    for library in ("kbnn", "larq"):
        if f"{library}-float" in summary:
            twin = summary[f"{library}-float"]
            print(f"{library} BNN / {library} float twin: s/epoch "
                  f"{summary[library]['steady'] / twin['steady']:.2f}, peak RSS "
                  f"{summary[library]['rss'] / twin['rss']:.2f}")


if __name__ == "__main__":
    main()
