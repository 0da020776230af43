"""kbnn.startup: kbnn's command lines start without TensorFlow's C++ start-up lines."""

import doctest
import os
import subprocess
import sys

from kbnn import startup

NOISE = ("I0000", "W0000", "E0000", "oneDNN", "cuda", "absl::InitializeLog")


def test_docstring_examples():
    assert doctest.testmod(startup).failed == 0


def test_only_kbnn_command_lines_without_verbose_are_quiet():
    assert startup.is_quiet_cli(["python", "-m", "kbnn.export", "m.keras", "--tflite"])
    assert startup.is_quiet_cli(["python", "-X", "dev", "-mkbnn.train", "bnn_mlp"])
    assert not startup.is_quiet_cli(["python", "-m", "kbnn.train", "bnn_mlp", "--verbose"])
    assert not startup.is_quiet_cli(["python", "-m", "pytest", "tests"])
    assert not startup.is_quiet_cli(["python", "-c", "import kbnn"])


def test_export_command_line_hides_tensorflow_start_up_lines_unless_verbose():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}

    def stderr(*extra):
        result = subprocess.run([sys.executable, "-m", "kbnn.export", "--help", *extra],
                                capture_output=True, text=True, timeout=120, env=env)
        assert result.returncode == 0, result.stderr
        assert "--verbose" in result.stdout
        return result.stderr

    assert not [line for line in stderr().splitlines() if any(n in line for n in NOISE)]
    verbose = stderr("--verbose")
    assert "absl::InitializeLog" in verbose or "I0000" in verbose


def test_export_command_line_hides_litert_announcement(tmp_path):
    """A real export verifies with LiteRT, whose first interpreter announces XNNPACK."""
    import keras

    import kbnn

    model = keras.Sequential([keras.Input((8,)), kbnn.layers.QuantDense(
        3, kernel_quantizer="ste_sign", use_bias=False)])
    model.save(tmp_path / "m.keras")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}

    def stderr(*extra):
        result = subprocess.run(
            [sys.executable, "-m", "kbnn.export", "--tflite", str(tmp_path / "m.keras"),
             "--verify-samples", "20", *extra], capture_output=True, text=True, timeout=300,
            env=env)
        assert result.returncode == 0, result.stderr
        assert "verified on 20 inputs" in result.stdout
        return result.stderr

    assert stderr() == ""
    assert "XNNPACK" in stderr("--verbose")


def test_quiet_native_logs_replays_what_a_failing_step_wrote(capfd):
    quiet = ["python", "-m", "kbnn.export", "m.keras"]
    with startup.quiet_native_logs(quiet):
        os.write(2, b"hidden\n")
    try:
        with startup.quiet_native_logs(quiet):
            os.write(2, b"shown on failure\n")
            raise RuntimeError("step failed")
    except RuntimeError:
        pass
    err = capfd.readouterr().err
    assert "hidden" not in err and "shown on failure" in err
