"""Quiet start-up for kbnn's command lines: TensorFlow's C++ start-up lines are hidden.

Example (what `python -m kbnn.train ...` runs first, through `import kbnn`):

    from kbnn.startup import quiet_tensorflow_startup
    quiet_tensorflow_startup()   # a no-op unless this process is a kbnn command line

Importing TensorFlow and its first look at the devices print lines such as
"oneDNN custom operations are on", "Could not find cuda drivers" and "E0000 ...
failed call to cuInit", from C++ and before any of our output; `TF_CPP_MIN_LOG_LEVEL`
does not hide them (absl writes everything to stderr before its logging is set up).
So for `python -m kbnn.train`, `kbnn.export` and `kbnn.runtime` (found in `sys.orig_argv`,
since while Python imports the parent package `kbnn`, `sys.argv` is still
`['-m']`), file descriptor 2 is pointed at a temporary file for that step. If the
import fails, what was captured is written out before the error. `--verbose` on the
command line, or `TF_CPP_MIN_LOG_LEVEL` set by the user, keeps everything. Later
C++ info and warnings are hidden with `TF_CPP_MIN_LOG_LEVEL=2` (errors still show).
Imported as a library, kbnn changes nothing.
"""

import contextlib
import os
import sys
import tempfile

__all__ = ["CLI_MODULES", "is_quiet_cli", "quiet_tensorflow_startup", "quiet_native_logs"]

CLI_MODULES = ("kbnn.train", "kbnn.export", "kbnn.runtime")


def is_quiet_cli(argv=None):
    """Whether `argv` (default `sys.orig_argv`) runs a kbnn command line without --verbose.

    >>> is_quiet_cli(["python", "-m", "kbnn.train", "bnn_mlp"])
    True
    >>> is_quiet_cli(["python", "-m", "kbnn.export", "m.keras", "--verbose"])
    False
    >>> is_quiet_cli(["python", "script.py"])
    False
    """
    argv = list(getattr(sys, "orig_argv", []) if argv is None else argv)
    for i, arg in enumerate(argv):
        if arg == "-m" and i + 1 < len(argv):
            module, rest = argv[i + 1], argv[i + 2:]
        elif arg.startswith("-m") and len(arg) > 2:
            module, rest = arg[2:], argv[i + 1:]
        else:
            continue
        return module in CLI_MODULES and "--verbose" not in rest
    return False


def quiet_tensorflow_startup(argv=None):
    """Import TensorFlow with its start-up lines hidden, when `is_quiet_cli(argv)`."""
    if not is_quiet_cli(argv) or "tensorflow" in sys.modules \
            or "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    with _stderr_captured() as captured:
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # CUDA's cuInit (and its error) runs here
        except BaseException:
            captured.replay()
            raise


@contextlib.contextmanager
def quiet_native_logs(argv=None):
    """Hide what native code writes to stderr during one step of a quiet command line.

    For the LiteRT runtime's one-time "INFO: Created TensorFlow Lite XNNPACK
    delegate for CPU." when a kbnn command line first runs an exported file. If the
    step fails, what was captured is written out before the error.
    """
    if not is_quiet_cli(argv):
        yield
        return
    with _stderr_captured() as captured:
        try:
            yield
        except BaseException:
            captured.replay()
            raise


class _Captured:
    def __init__(self, file, stderr_fd):
        self._file, self._stderr_fd = file, stderr_fd

    def replay(self):
        self._file.seek(0)
        os.write(self._stderr_fd, self._file.read())


@contextlib.contextmanager
def _stderr_captured():
    """Point file descriptor 2 (C++ and Python writes alike) at a temporary file."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as file:
        os.dup2(file.fileno(), 2)
        try:
            yield _Captured(file, saved)
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
