"""kbnn.files: outputs appear whole or not at all, even when the process is killed."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from kbnn.files import PARTIAL_PREFIX, staged_outputs, write_atomically


def run_python(code, cwd):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_write_atomically_writes_and_replaces(tmp_path):
    write_atomically(tmp_path / "a.bin", b"one")
    write_atomically(tmp_path / "a.bin", b"two")
    assert (tmp_path / "a.bin").read_bytes() == b"two"
    assert os.listdir(tmp_path) == ["a.bin"]


def test_staged_outputs_move_in_together_or_not_at_all(tmp_path):
    with staged_outputs(tmp_path / "new") as staging:
        (staging / "m.json").write_text("{}")
        (staging / "m.keras").write_bytes(b"k")
        assert not (tmp_path / "new" / "m.json").exists()  # nothing visible yet
    assert sorted(os.listdir(tmp_path / "new")) == ["m.json", "m.keras"]
    with pytest.raises(RuntimeError):
        with staged_outputs(tmp_path) as staging:
            (staging / "half.keras").write_bytes(b"partial")
            raise RuntimeError("failed while saving")
    assert sorted(os.listdir(tmp_path)) == ["new"]


def test_a_read_only_or_directory_destination_is_refused_and_nothing_changes(tmp_path):
    (tmp_path / "m.json").write_text("old")
    (tmp_path / "m.json").chmod(0o444)
    with pytest.raises(PermissionError, match="m.json: it is read-only"):
        with staged_outputs(tmp_path) as staging:
            (staging / "m.keras").write_bytes(b"new")  # would be fine, but not alone
            (staging / "m.json").write_text("new")
    assert sorted(os.listdir(tmp_path)) == ["m.json"]
    assert (tmp_path / "m.json").read_text() == "old"
    (tmp_path / "d.tflite").mkdir()
    with pytest.raises(IsADirectoryError, match="d.tflite: it is a directory"):
        write_atomically(tmp_path / "d.tflite", b"x")


def test_sigterm_while_writing_leaves_nothing(tmp_path):
    result = run_python("""
        import os, signal
        from kbnn.files import staged_outputs
        with staged_outputs("out") as staging:
            (staging / "m.keras").write_bytes(b"half a model")
            os.kill(os.getpid(), signal.SIGTERM)
            (staging / "m.json").write_text("never")
        """, tmp_path)
    assert result.returncode == 128 + signal.SIGTERM, result.stderr
    assert os.listdir(tmp_path / "out") == []


def test_sigkill_leftovers_are_hidden_and_removed_by_the_next_write(tmp_path):
    result = run_python("""
        import os, signal
        from kbnn.files import staged_outputs
        with staged_outputs("out") as staging:
            (staging / "m.keras").write_bytes(b"half a model")
            os.kill(os.getpid(), signal.SIGKILL)
        """, tmp_path)
    assert result.returncode == -signal.SIGKILL
    leftovers = os.listdir(tmp_path / "out")
    assert len(leftovers) == 1 and leftovers[0].startswith(PARTIAL_PREFIX)  # hidden name
    write_atomically(tmp_path / "out" / "other.bin", b"x")
    assert os.listdir(tmp_path / "out") == ["other.bin"]
