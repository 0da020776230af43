"""The export CLI fails clearly and leaves nothing half-written (issue 21's export cases)."""

import os
import signal
import socket
import stat
import subprocess
import sys

import keras
import pytest

import kbnn
from kbnn.export.__main__ import main as export_main
from kbnn.files import PARTIAL_PREFIX


@pytest.fixture
def saved(tmp_path):
    model = keras.Sequential([keras.Input((6,)), kbnn.layers.QuantDense(
        3, kernel_quantizer="ste_sign")])
    path = tmp_path / "m.keras"
    model.save(path)
    return path


def fails_with(args, capsys, message):
    assert export_main(args) == 1
    err = capsys.readouterr().err
    assert message in err and "nothing written" in err, err


def test_truncated_keras_file_says_so(saved, capsys):
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    fails_with(["--tflite", str(saved)], capsys, "the file is truncated or damaged")
    assert not saved.with_suffix(".tflite").exists()


def test_huge_random_sample_count_is_refused_before_converting(saved, capsys):
    fails_with(["--tflite", str(saved), "--verify-samples", "1000000000000"], capsys,
               "--verify-samples 1000000000000: that many random inputs of shape (6,) take")
    assert "converting" not in capsys.readouterr().out


def test_read_only_output_is_refused_not_replaced(saved, tmp_path, capsys):
    out = tmp_path / "kept.tflite"
    out.write_bytes(b"precious")
    out.chmod(stat.S_IRUSR | stat.S_IRGRP)
    fails_with(["--tflite", str(saved), "-o", str(out)], capsys, "it is read-only")
    assert out.read_bytes() == b"precious"


def test_stale_partial_output_of_a_killed_export_is_removed(saved, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale = tmp_path / f"{PARTIAL_PREFIX}{socket.gethostname()}-{dead}-0badc0de"
    stale.mkdir()
    (stale / "m.tflite").write_bytes(b"half")
    assert export_main(["--tflite", str(saved), "--verify-samples", "4"]) == 0
    assert not stale.exists() and saved.with_suffix(".tflite").exists()


SIGTERM_DURING_EXPORT = """
import os, signal, sys
from kbnn.export import verify
from kbnn.export.__main__ import main

def compare(*args, **kwargs):          # SIGTERM arrives while the export runs
    os.kill(os.getpid(), signal.SIGTERM)
    return "verified"

verify.compare = compare
sys.exit(main(["--tflite", sys.argv[1], "--verify-samples", "4"]))
"""


def test_sigterm_during_export_exits_cleanly_and_writes_nothing(saved, tmp_path):
    before = set(os.listdir(tmp_path))
    run = subprocess.run([sys.executable, "-c", SIGTERM_DURING_EXPORT, str(saved)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 128 + signal.SIGTERM, run.stderr[-2000:]
    assert "terminated" in run.stderr and "nothing written" in run.stderr
    assert set(os.listdir(tmp_path)) == before
