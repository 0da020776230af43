"""The examples run end to end on tiny data, as a user would run them."""

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(script, *args, cwd):
    done = subprocess.run([sys.executable, str(ROOT / "examples" / script), *map(str, args)],
                          cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_quickstart(tiny_fashion_mnist, tmp_path):
    out = _run("quickstart.py", "--data-dir", tiny_fashion_mnist, "--epochs", "1", cwd=tmp_path)
    assert "test accuracy" in out.lower()


def test_deploy_tflite_exports_verifies_and_classifies(tiny_fashion_mnist, tmp_path):
    out = _run("deploy_tflite.py", "--data-dir", tiny_fashion_mnist,
               "--output", tmp_path / "m.tflite", cwd=tmp_path)
    assert (tmp_path / "m.tflite").stat().st_size < 200_000  # packed: the float file is 3.2 MB
    assert out.count("predicted ") == 8


def test_reproduce_study_writes_table_json_and_figures(tiny_fashion_mnist, tmp_path):
    out = _run("reproduce_study.py", "--hidden", "8", "--epochs", "2", "--rounds", "2",
               "--precision", "bfloat16", "--data-dir", tiny_fashion_mnist,
               "--out", tmp_path / "study", cwd=tmp_path)
    results = json.loads((tmp_path / "study" / "study.json").read_text())
    # Rounds run in alternating order (seeds 0, 1) and are listed per configuration.
    assert [(r["hidden"], r["kind"], r["round"], r["seed"]) for r in results] == [
        (8, kind, n, n) for kind in ("float", "deterministic", "stochastic") for n in (0, 1)]
    for r in results:
        assert len(r["epoch_seconds"]) == len(r["test_accuracy"]) == 2
        assert r["lr"] == 0.001 and r["precision"] == "bfloat16"
        assert r["steps_per_execution"] == 50
        assert r["peak_rss_mb"] >= r["rss_before_fit_mb"] > 100 and r["training_mb"] >= 0
    table = (tmp_path / "study" / "study.md").read_text()
    assert table.count("| 784-8-10 |") == 3 and "| 1.00 | 1.00, 1.00 | 1.00 | 1.00 |" in table
    assert "2 rounds (seeds 0..1) in alternating order" in table
    for name in ("error_vs_epoch.png", "time_per_epoch.png", "memory.png"):
        assert (tmp_path / "study" / name).read_bytes()[:4] == b"\x89PNG"
    assert "wrote" in out


def test_reproduce_study_replot_compares_median_epoch_times(tmp_path):
    # One slow epoch (a busy machine) moves the mean, not the median the ratio uses.
    row = dict(hidden=8, epochs=4, batch_size=100, train_accuracy=[0.5] * 4,
               test_accuracy=[0.5] * 4, rss_before_fit_mb=700)
    results = [dict(row, kind="float", epoch_seconds=[9, 2, 4, 100], peak_rss_mb=1000),
               dict(row, kind="deterministic", epoch_seconds=[9, 3, 3, 5], peak_rss_mb=900)]
    (tmp_path / "in.json").write_text(json.dumps(results))
    _run("reproduce_study.py", "--replot", tmp_path / "in.json", "--out", tmp_path / "re",
         cwd=tmp_path)
    table = (tmp_path / "re" / "study.md").read_text()
    assert "4 epochs, batch 100, Adam 0.001, seed 0," in table  # defaults: the rows lack lr/seed
    assert "| 784-8-10 | float | 9.0 | 4.00 | 35.33 | 1,000 | n/a |" in table
    assert "| 784-8-10 | deterministic | 9.0 | 3.00 | 3.67 | 900 | n/a |" in table
    assert table.rstrip().endswith("| 0.75 | 0.75 | 0.90 | n/a |")  # no training memory then
    assert json.loads((tmp_path / "re" / "study.json").read_text()) == results


def test_vs_larq_reports_wall_and_cpu_seconds_per_epoch(tiny_fashion_mnist, tmp_path):
    # kbnn rows only (Larq needs its own environment): each training reports
    # wall-clock and process CPU seconds per epoch and the machine's load, and the
    # BNN / float twin ratio is printed for both clocks, per round.
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "vs_larq.py"), "--data-dir",
         tiny_fashion_mnist, "--models", "mlp128", "--no-larq", "--epochs", "2",
         "--rounds", "1", "--json", tmp_path / "runs.json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = json.loads((tmp_path / "runs.json").read_text())["mlp128"]["runs"]
    assert sorted(runs) == ["kbnn bnn", "kbnn float"]
    for (run,) in runs.values():
        assert len(run["epoch_seconds"]) == len(run["epoch_cpu_seconds"]) == 2
        assert all(seconds > 0 for seconds in run["epoch_cpu_seconds"])
        assert run["load"] >= 0
    bnn, flt = runs["kbnn bnn"][0], runs["kbnn float"][0]
    cpu_ratio = bnn["epoch_cpu_seconds"][1] / flt["epoch_cpu_seconds"][1]
    label = "kbnn BNN / kbnn float, CPU s/epoch"
    assert f"{label:<40} {cpu_ratio:5.2f}   rounds: {cpu_ratio:.2f}\n" in done.stdout
