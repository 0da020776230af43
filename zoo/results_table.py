"""Write the results table of zoo/README.md from saved_models/*.json (never typed by hand).

    python zoo/results_table.py          # rewrites the table between the markers
    python zoo/results_table.py --check  # exit 1 if README.md is out of date
"""

import argparse
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "zoo" / "README.md"
BEGIN, END = "<!-- results-table:begin -->", "<!-- results-table:end -->"


def _epochs(training):
    """Epochs of a training, those of the cycles it started from (`--init`) included."""
    init = training.get("init") or {}
    return training["epochs"] + (_epochs(init["training"]) if "training" in init else 0)


def table(models_dir=ROOT / "saved_models"):
    rows = [
        "| model | architecture | test accuracy | 1-bit params | 32-bit params | memory "
        "| as float32 | epochs (best) | s/epoch | recipe |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for path in sorted(models_dir.glob("*.json")):
        m = json.loads(path.read_text())
        arch = {k: v for k, v in m["model"].items() if k != "builder"}
        arch = ", ".join(f"{k}={v}" for k, v in arch.items())
        seconds = m["epoch_seconds"][1:] or m["epoch_seconds"]
        epochs = _epochs(m["training"])  # the kept epoch counts from the first cycle's start
        kept = epochs - m["training"]["epochs"] + m["best_epoch"]
        rows.append(
            f"| {m['name']} | {m['model']['builder']}({arch}) | "
            f"{100 * m['test_accuracy']:.2f}% | {m['params_1bit']:,} | "
            f"{m['params_32bit']:,} | {m['memory_bytes'] / 1024:,.1f} KiB | "
            f"{m['float32_memory_bytes'] / 1024:,.1f} KiB | "
            f"{epochs} ({kept}) | "
            f"{sum(seconds) / len(seconds):.1f} | [recipe](recipes/{m['name']}.sh) |"
        )
    return "\n".join(rows)


def updated_readme():
    text = README.read_text()
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    return f"{head}{BEGIN}\n{table()}\n{END}{tail}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    new = updated_readme()
    if args.check:
        if new != README.read_text():
            print("zoo/README.md is out of date: run python zoo/results_table.py")
            return 1
        return 0
    README.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
