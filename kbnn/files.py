"""Writing output files so that no failure or kill leaves a partial one where a user looks.

Example:

    from kbnn.files import staged_outputs, write_atomically

    write_atomically("model.tflite", b"TFL3...")        # the whole file, or none

    with staged_outputs("runs") as staging:              # several files, moved in together
        (staging / "bnn.json").write_text("{}")
        model.save(staging / "bnn.keras")

Files are written into a hidden directory beside their destination, named
`.kbnn-partial-<host>-<pid>-<random>` (no glob such as `*.keras` or `runs/*` picks it
up), then each is renamed into place with `os.replace`, atomic within a filesystem.
An exception, Ctrl-C or SIGTERM removes the hidden directory; one left behind by
SIGKILL or a power cut is removed by the next write into the same directory, once the
process that made it is gone. An existing read-only destination is refused, not
replaced.
"""

import contextlib
import os
import pathlib
import re
import secrets
import shutil
import signal
import socket
import stat
import threading

__all__ = ["PARTIAL_PREFIX", "check_replaceable", "exit_on_sigterm", "remove_stale_partials",
           "staged_outputs", "write_atomically"]

PARTIAL_PREFIX = ".kbnn-partial-"
_PARTIAL = re.compile(re.escape(PARTIAL_PREFIX) + r"(?P<host>.+)-(?P<pid>\d+)-[0-9a-f]+$")


def write_atomically(path, data):
    """Write `data` (bytes) to `path` through a hidden temporary file; never half a file.

    Example:

        write_atomically("model.tflite", tflite_bytes)
    """
    path = pathlib.Path(path)
    with staged_outputs(path.parent) as staging:
        (staging / path.name).write_bytes(data)


@contextlib.contextmanager
def staged_outputs(directory):
    """Yield a hidden staging directory; on success move each file in it into `directory`.

    Example:

        with staged_outputs("saved_models") as staging:
            model.save(staging / "m.keras")
            (staging / "m.json").write_text(record)

    Every destination is checked (not a directory, not read-only) before the first is
    replaced, so a refusal changes nothing. `directory` is created if needed.
    """
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(directory)
    staging = directory / f"{PARTIAL_PREFIX}{socket.gethostname()}-{os.getpid()}-" \
                          f"{secrets.token_hex(4)}"
    with exit_on_sigterm():
        staging.mkdir()
        try:
            yield staging
            names = sorted(p.name for p in staging.iterdir())
            for name in names:
                check_replaceable(directory / name)
            for name in names:
                os.replace(staging / name, directory / name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def remove_stale_partials(directory):
    """Remove the staging directories in `directory` whose process (on this host) is gone."""
    host = socket.gethostname()
    try:
        entries = list(pathlib.Path(directory).iterdir())
    except OSError:
        return
    for entry in entries:
        match = _PARTIAL.match(entry.name)
        if match and match["host"] == host and not _alive(int(match["pid"])):
            shutil.rmtree(entry, ignore_errors=True)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def check_replaceable(path):
    """Refuse to replace `path` if it is a directory or a read-only file (PermissionError)."""
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is a directory; choose another "
                                f"output path.")
    # Mode bits, not os.access: root may write anything, but a read-only file was made so
    # on purpose.
    if path.exists() and not path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        raise PermissionError(f"cannot replace {path}: it is read-only; make it writable "
                              f"(chmod u+w) to replace it, or choose another output path.")


class _Terminated(SystemExit):
    """SIGTERM, raised as an exception so that `finally` blocks clean up."""


@contextlib.contextmanager
def exit_on_sigterm():
    """While active, SIGTERM raises SystemExit(143) instead of killing the process at once.

    Example:

        with exit_on_sigterm():
            long_work()          # a `kill PID` now runs finally blocks and exits 143

    Python's default SIGTERM ends the process without unwinding, so temporary files
    stay behind. Only the main thread can set handlers; elsewhere, and when a handler
    is set already, this does nothing.
    """
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def terminate(signum, frame):
        raise _Terminated(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
