"""Reproduce the seed study: training time, memory and accuracy of float vs binary MLPs.

    python examples/reproduce_study.py --data-dir ../shared/data/fashion_mnist            # ~10 min
    python examples/reproduce_study.py --epochs 20 --out zoo/study                         # full run

For 784-128-10 and 784-1024-10 (`--hidden` picks others), each as float / deterministic / stochastic
binarization (`kbnn.zoo` twins), trains `--epochs` epochs in a fresh process
per configuration (so each peak RSS is its own) and records seconds per
epoch (the first, tracing epoch apart), the process's RSS high-water mark,
and train and test accuracy after every epoch (as the study plotted them; no
choice is made on the test split: every run reports its last epoch). Writes OUT/study.json,
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

    keras.utils.set_random_seed(args.seed)
    train = load_fashion_mnist("train", data_dir=args.data_dir, batch_size=args.batch_size,
                               shuffle=True, seed=args.seed)
    test = load_fashion_mnist("test", data_dir=args.data_dir, batch_size=1000)
    if kind == "float":
        model = zoo.float_mlp((hidden,))
    else:
        model = zoo.bnn_mlp((hidden,), binarization=kind, seed=args.seed)
    model.compile(kbnn.optimizers.Adam(args.lr),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], jit_compile=args.jit)
    rss_before_fit = peak_memory_mb()
    timer = EpochTimer()
    history = model.fit(train, validation_data=test, epochs=args.epochs, callbacks=[timer],
                        verbose=0)
    return {
        "hidden": hidden, "kind": kind, "epochs": args.epochs, "batch_size": args.batch_size,
        "lr": args.lr, "seed": args.seed,
        "epoch_seconds": timer.seconds,
        "train_accuracy": history.history["accuracy"],
        "test_accuracy": history.history["val_accuracy"],
        "peak_rss_mb": peak_memory_mb(), "rss_before_fit_mb": rss_before_fit,
    }


def mean_steady(seconds):
    steady = seconds[1:] or seconds
    return sum(steady) / len(steady)


def median_steady(seconds):
    """Median seconds per epoch without the first: robust to the slow epochs a busy machine adds."""
    steady = sorted(seconds[1:] or seconds)
    middle = len(steady) // 2
    return steady[middle] if len(steady) % 2 else (steady[middle - 1] + steady[middle]) / 2


def markdown(results):
    lines = ["| MLP | binarization | first epoch (s) | s/epoch, median | s/epoch, mean | "
             "peak RSS (MiB) | final train acc | final test acc | time / float | memory / float |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        base = next(f for f in results if f["hidden"] == r["hidden"] and f["kind"] == "float")
        lines.append(
            f"| 784-{r['hidden']}-10 | {r['kind']} | {r['epoch_seconds'][0]:.1f} | "
            f"{median_steady(r['epoch_seconds']):.2f} | {mean_steady(r['epoch_seconds']):.2f} | "
            f"{r['peak_rss_mb']:,.0f} | "
            f"{100 * r['train_accuracy'][-1]:.2f}% | {100 * r['test_accuracy'][-1]:.2f}% | "
            f"{median_steady(r['epoch_seconds']) / median_steady(base['epoch_seconds']):.2f} | "
            f"{r['peak_rss_mb'] / base['peak_rss_mb']:.2f} |")
    return "\n".join(lines)


def figures(results, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    widths = sorted({r["hidden"] for r in results})
    fig, axes = plt.subplots(1, len(widths), figsize=(5.5 * len(widths), 4), sharey=True,
                             squeeze=False)
    for ax, hidden in zip(axes[0], widths):
        for r in (r for r in results if r["hidden"] == hidden):
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

    labels = [f"{r['hidden']}\n{r['kind'][:5]}" for r in results]
    for key, ylabel, name in (
        (lambda r: median_steady(r["epoch_seconds"]), "seconds per epoch (median)",
         "time_per_epoch.png"),
        (lambda r: r["peak_rss_mb"], "peak RSS (MiB)", "memory.png"),
    ):
        fig, ax = plt.subplots(figsize=(7, 4))
        colors = ["tab:gray" if r["kind"] == "float" else "tab:blue" for r in results]
        ax.bar(labels, [key(r) for r in results], color=colors)
        ax.set(ylabel=ylabel, title=ylabel + " (gray: float)")
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jit", action="store_true", help="XLA-compile the training steps")
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
    for hidden, kind in [(h, kind) for h in args.hidden for kind in KINDS]:
        start = time.perf_counter()
        print(f"784-{hidden}-10 {kind}: training {args.epochs} epochs ...", flush=True)
        command = [sys.executable, __file__, "--run-one", str(hidden), kind,
                   "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
                   "--lr", str(args.lr), "--seed", str(args.seed)]
        command += ["--jit"] if args.jit else []
        command += ["--data-dir", args.data_dir] if args.data_dir else []
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            return 1
        result = json.loads(done.stdout.strip().splitlines()[-1])
        results.append(result)
        print(f"  {median_steady(result['epoch_seconds']):.2f} s/epoch (median), peak RSS "
              f"{result['peak_rss_mb']:,.0f} MiB, test accuracy "
              f"{100 * result['test_accuracy'][-1]:.2f}% ({time.perf_counter() - start:.0f} s)",
              flush=True)
    write_report(results, out, args.lr, args.seed)
    return 0


def write_report(results, out, lr, seed):
    """Write OUT/study.json, study.md and the figures of `results`; print the table.

    Learning rate and seed come from the results where recorded (older files
    lack them), else from `lr` and `seed`.
    """
    lr, seed = results[0].get("lr", lr), results[0].get("seed", seed)
    (out / "study.json").write_text(json.dumps(results, indent=1) + "\n")
    table = markdown(results)
    (out / "study.md").write_text(
        f"# Float vs binary MLPs on Fashion-MNIST\n\n{results[0]['epochs']} epochs, batch "
        f"{results[0]['batch_size']}, Adam {lr}, seed {seed}, one process per row; "
        f"s/epoch excludes the first (tracing) epoch; time / float compares medians, "
        f"which a few slow epochs on a busy machine do not move.\n\n{table}\n")
    figures(results, out)
    print(table)
    print(f"wrote {out}/study.json, study.md, error_vs_epoch.png, time_per_epoch.png, memory.png")


if __name__ == "__main__":
    sys.exit(main())
