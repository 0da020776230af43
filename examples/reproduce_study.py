"""Reproduce the seed study: training time, memory and accuracy of float vs binary MLPs.

    python examples/reproduce_study.py --data-dir ../shared/data/fashion_mnist            # ~10 min
    python examples/reproduce_study.py --epochs 20 --out zoo/study                         # full run

For 784-128-10 and 784-1024-10 (`--hidden` picks others), each as float / deterministic / stochastic
binarization (`kbnn.zoo` twins), trains `--epochs` epochs in a fresh process
per configuration (so each peak RSS is its own), as `kbnn.train` compiles
(`kbnn.train.fit.compile_model`; `--precision` for the binary layers), and
records seconds per epoch (the first, tracing epoch apart), the process's RSS
high-water mark, training memory (peak RSS during `fit` minus RSS just before
it), and train and test accuracy after every epoch (as the study plotted them;
no choice is made on the test split: every run reports its last epoch). With
`--rounds N` every configuration trains N times (seeds seed, seed+1, ...), the
configurations in alternating order, and the table gives medians and each
round's BNN/float ratio: this machine drifts. Writes OUT/study.json,
OUT/study.md (table with BNN/float ratios) and OUT/*.png (error vs epoch,
time per epoch, memory), like the study's figures.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

KINDS = ("float", "deterministic", "stochastic")


def run_one(hidden, kind, args):
    """Train one configuration in this process; return its measurements."""
    import keras

    import kbnn
    from kbnn import zoo
    from kbnn.data import load_fashion_mnist
    from kbnn.train import EpochTimer, peak_memory_mb
    from kbnn.train.callbacks import TrainingMemory
    from kbnn.train.fit import compile_model

    keras.utils.set_random_seed(args.seed)
    train = load_fashion_mnist("train", data_dir=args.data_dir, batch_size=args.batch_size,
                               shuffle=True, seed=args.seed)
    test = load_fashion_mnist("test", data_dir=args.data_dir, batch_size=1000)
    if kind == "float":
        model = zoo.float_mlp((hidden,))
    else:
        model = zoo.bnn_mlp((hidden,), binarization=kind, seed=args.seed)
    kbnn.layers.set_compute(model, args.precision)
    compile_model(model, args.lr, jit_compile=args.jit)
    timer, memory = EpochTimer(), TrainingMemory()
    history = model.fit(train, validation_data=test, epochs=args.epochs,
                        callbacks=[timer, memory], verbose=0)
    return {
        "hidden": hidden, "kind": kind, "epochs": args.epochs, "batch_size": args.batch_size,
        "lr": args.lr, "seed": args.seed, "precision": args.precision,
        "steps_per_execution": model.steps_per_execution,
        "epoch_seconds": timer.seconds,
        "train_accuracy": history.history["accuracy"],
        "test_accuracy": history.history["val_accuracy"],
        "peak_rss_mb": peak_memory_mb(), "rss_before_fit_mb": memory.before_mb,
        "training_mb": memory.training_mb,
    }


def mean_steady(seconds):
    steady = seconds[1:] or seconds
    return sum(steady) / len(steady)


def median_steady(seconds):
    """Median seconds per epoch without the first: robust to the slow epochs a busy machine adds."""
    return median(seconds[1:] or seconds)


def median(values):
    values = sorted(values)
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def configurations(results):
    """{(hidden, kind): [its runs, in round order]}, configurations in first-run order."""
    runs = {}
    for r in results:
        runs.setdefault((r["hidden"], r["kind"]), []).append(r)
    return runs


def _ratio(value, base):
    return "n/a" if value is None or not base else f"{value / base:.2f}"


def markdown(results):
    """The study's table: medians over rounds (accuracies: means) and BNN/float ratios.

    `time / float` is the ratio of the median s/epoch, `per round` each round's
    ratio; memory is peak RSS, training the peak during fit minus RSS before it
    (n/a in files written before it was measured).
    """
    lines = ["| MLP | binarization | first epoch (s) | s/epoch, median | s/epoch, mean | "
             "peak RSS (MiB) | training (MiB) | final train acc | final test acc | "
             "time / float | per round | memory / float | training / float |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    runs = configurations(results)
    summary = {key: dict(
        first=median([r["epoch_seconds"][0] for r in rs]),
        steady=median([median_steady(r["epoch_seconds"]) for r in rs]),
        mean=sum(mean_steady(r["epoch_seconds"]) for r in rs) / len(rs),
        rss=median([r["peak_rss_mb"] for r in rs]),
        training=None if any(r.get("training_mb") is None for r in rs)
        else median([r["training_mb"] for r in rs]),
        train=sum(r["train_accuracy"][-1] for r in rs) / len(rs),
        test=sum(r["test_accuracy"][-1] for r in rs) / len(rs)) for key, rs in runs.items()}
    for (hidden, kind), s in summary.items():
        base = summary[(hidden, "float")]
        rounds = ", ".join(
            f"{median_steady(r['epoch_seconds']) / median_steady(b['epoch_seconds']):.2f}"
            for r, b in zip(runs[(hidden, kind)], runs[(hidden, "float")]))
        training = "n/a" if s["training"] is None else f"{s['training']:,.1f}"
        lines.append(
            f"| 784-{hidden}-10 | {kind} | {s['first']:.1f} | {s['steady']:.2f} | "
            f"{s['mean']:.2f} | {s['rss']:,.0f} | {training} | {100 * s['train']:.2f}% | "
            f"{100 * s['test']:.2f}% | {s['steady'] / base['steady']:.2f} | {rounds} | "
            f"{s['rss'] / base['rss']:.2f} | {_ratio(s['training'], base['training'])} |")
    return "\n".join(lines)


def figures(results, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = configurations(results)
    widths = sorted({hidden for hidden, _ in runs})
    fig, axes = plt.subplots(1, len(widths), figsize=(5.5 * len(widths), 4), sharey=True,
                             squeeze=False)
    for ax, hidden in zip(axes[0], widths):
        for r in (rs[0] for (h, _), rs in runs.items() if h == hidden):  # the first round
            epochs = range(1, len(r["test_accuracy"]) + 1)
            ax.plot(epochs, [100 * (1 - a) for a in r["test_accuracy"]], label=f"{r['kind']} test")
            ax.plot(epochs, [100 * (1 - a) for a in r["train_accuracy"]], "--", alpha=0.6,
                    label=f"{r['kind']} train")
        ax.set(title=f"784-{hidden}-10", xlabel="epoch", ylabel="error (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "error_vs_epoch.png", dpi=100)
    plt.close(fig)

    labels = [f"{hidden}\n{kind[:5]}" for hidden, kind in runs]
    for key, ylabel, name in (
        (lambda rs: median([median_steady(r["epoch_seconds"]) for r in rs]),
         "seconds per epoch (median)", "time_per_epoch.png"),
        (lambda rs: median([r["peak_rss_mb"] for r in rs]), "peak RSS (MiB)", "memory.png"),
    ):
        fig, ax = plt.subplots(figsize=(7, 4))
        colors = ["tab:gray" if kind == "float" else "tab:blue" for _, kind in runs]
        ax.bar(labels, [key(rs) for rs in runs.values()], color=colors)
        ax.set(ylabel=ylabel, title=ylabel + " (gray: float)")
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)


def main():
    from kbnn.layers import PRECISIONS
    from kbnn.train.fit import PRECISION

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jit", action="store_true", help="XLA-compile the training steps")
    parser.add_argument("--precision", choices=PRECISIONS, default=PRECISION,
                        help="forward product of the binary x binary layers (bit-identical)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="train every configuration this many times (seeds seed, seed+1, "
                             "...), in alternating order; the table gives medians")
    parser.add_argument("--data-dir", default=os.environ.get("KBNN_DATA_DIR"))
    parser.add_argument("--out", default="study")
    parser.add_argument("--hidden", type=int, nargs="+", default=[128, 1024],
                        help="hidden widths of the 784-H-10 MLPs")
    parser.add_argument("--replot", metavar="STUDY_JSON",
                        help="write the table and figures of an earlier run's study.json "
                             "into --out, without training")
    parser.add_argument("--run-one", nargs=2, metavar=("HIDDEN", "KIND"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.run_one:
        print(json.dumps(run_one(int(args.run_one[0]), args.run_one[1], args)))
        return 0

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.replot:
        results = json.loads(pathlib.Path(args.replot).read_text())
        write_report(results, out, args.lr, args.seed)
        return 0
    results = []
    configs = [(h, kind) for h in args.hidden for kind in KINDS]
    for round_, (hidden, kind) in [(n, c) for n in range(args.rounds)
                                   for c in (configs if n % 2 == 0 else configs[::-1])]:
        start, seed = time.perf_counter(), args.seed + round_
        print(f"784-{hidden}-10 {kind}: training {args.epochs} epochs (round {round_ + 1}, "
              f"seed {seed}) ...", flush=True)
        command = [sys.executable, __file__, "--run-one", str(hidden), kind,
                   "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
                   "--lr", str(args.lr), "--seed", str(seed), "--precision", args.precision]
        command += ["--jit"] if args.jit else []
        command += ["--data-dir", args.data_dir] if args.data_dir else []
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            return 1
        result = {**json.loads(done.stdout.strip().splitlines()[-1]), "round": round_}
        results.append(result)
        print(f"  {median_steady(result['epoch_seconds']):.2f} s/epoch (median), peak RSS "
              f"{result['peak_rss_mb']:,.0f} MiB, training {result['training_mb']:,.1f} MiB, "
              f"test accuracy "
              f"{100 * result['test_accuracy'][-1]:.2f}% ({time.perf_counter() - start:.0f} s)",
              flush=True)
    results.sort(key=lambda r: configs.index((r["hidden"], r["kind"])))  # rounds in order
    write_report(results, out, args.lr, args.seed)
    return 0


def write_report(results, out, lr, seed):
    """Write OUT/study.json, study.md and the figures of `results`; print the table.

    Learning rate and seed come from the results where recorded (older files
    lack them), else from `lr` and `seed`.
    """
    lr, seed = results[0].get("lr", lr), results[0].get("seed", seed)
    rounds = max(r.get("round", 0) for r in results) + 1
    how = f"{rounds} rounds (seeds {seed}..{seed + rounds - 1}) in alternating order, medians" \
        if rounds > 1 else "one run each"
    setup = (f"{results[0].get('steps_per_execution', 1)} steps per execution, precision "
             f"{results[0]['precision']}, " if "precision" in results[0] else "")
    (out / "study.json").write_text(json.dumps(results, indent=1) + "\n")
    table = markdown(results)
    (out / "study.md").write_text(
        f"# Float vs binary MLPs on Fashion-MNIST\n\n{results[0]['epochs']} epochs, batch "
        f"{results[0]['batch_size']}, Adam {lr}, seed {seed}, {setup}one process per run, "
        f"{how}; s/epoch excludes the first (tracing) epoch; time / float compares medians, "
        f"which a few slow epochs on a busy machine do not move; training memory is peak RSS "
        f"during fit minus RSS just before it.\n\n{table}\n")
    figures(results, out)
    print(table)
    print(f"wrote {out}/study.json, study.md, error_vs_epoch.png, time_per_epoch.png, memory.png")


if __name__ == "__main__":
    sys.exit(main())
