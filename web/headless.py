"""Drive Debian's headless Chromium over its DevTools pipe, with the standard library only.

    python web/headless.py http://127.0.0.1:8000/index.html?selftest=1 --screenshot shot.png

Chromium started with `--remote-debugging-pipe` reads DevTools Protocol commands (JSON,
each ended by a NUL byte) from file descriptor 3 and writes replies and events to
descriptor 4, the channel Playwright uses too; so the demo's test needs no browser
download and no Python package beyond the standard library. Only the system `chromium`
(apt-get install chromium) is run.
"""

import argparse
import base64
import itertools
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time

# Flags for a headless Chromium run as root in a container, with nothing reaching the
# network on its own (no updates, no sync, no QUIC probes) and a fresh profile each time.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--disable-default-apps", "--mute-audio",
         "--hide-scrollbars", "--remote-debugging-pipe"]


def find_chromium():
    """The path of the system Chromium, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class ChromiumError(RuntimeError):
    """Chromium failed, or a DevTools command answered with an error."""


class Chromium:
    """A headless Chromium and one page, driven through the DevTools pipe.

    >>> with Chromium() as browser:                                  # doctest: +SKIP
    ...     browser.open("http://127.0.0.1:8000/", width=1000, height=800)
    ...     browser.evaluate("document.title")
    """

    def __init__(self, executable=None):
        self.executable = executable or find_chromium()
        if not self.executable:
            raise ChromiumError("no chromium on PATH; apt-get install chromium")
        self.profile = tempfile.mkdtemp(prefix="kbnn-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire_pipes():  # in the child, before exec: its fd 3 reads, fd 4 writes
            read, write = os.dup(to_browser_r), os.dup(from_browser_w)
            os.dup2(read, 3)
            os.dup2(write, 4)

        self.process = subprocess.Popen(
            [self.executable, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=wire_pipes, close_fds=False)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._ids = itertools.count(1)
        self._replies = {}
        self._reply_ready = threading.Condition()
        self.console = []  # console messages and uncaught exceptions of the page
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.session = None

    def _read(self):
        buffer = b""
        while True:
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                break
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for raw in messages:
                message = json.loads(raw)
                if "id" in message:
                    with self._reply_ready:
                        self._replies[message["id"]] = message
                        self._reply_ready.notify_all()
                elif message.get("method") == "Runtime.consoleAPICalled":
                    args = message["params"]["args"]
                    self.console.append(" ".join(str(a.get("value", a.get("description", "")))
                                                 for a in args))
                elif message.get("method") == "Runtime.exceptionThrown":
                    details = message["params"]["exceptionDetails"]
                    self.console.append(details.get("exception", {}).get(
                        "description", details.get("text", "")))
        with self._reply_ready:
            self._closed = True
            self._reply_ready.notify_all()

    def send(self, method, params=None, session=True, timeout=60):
        """Send one DevTools command and return its result (raises ChromiumError on error)."""
        message = {"id": next(self._ids), "method": method, "params": params or {}}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self._reply_ready:
            while message["id"] not in self._replies:
                if getattr(self, "_closed", False) or time.monotonic() > deadline:
                    raise ChromiumError(f"no reply to {method} (chromium exited or hung): "
                                        f"{self._stderr_tail()}")
                self._reply_ready.wait(0.5)
            reply = self._replies.pop(message["id"])
        if "error" in reply:
            raise ChromiumError(f"{method}: {reply['error'].get('message')}")
        return reply.get("result", {})

    def _stderr_tail(self):
        if self.process.poll() is None:
            return "still running"
        return self.process.stderr.read().decode(errors="replace")[-2000:]

    def open(self, url, width=1100, height=900):
        """Open `url` in a new page of `width` x `height` CSS pixels and wait for its load."""
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)
        self.session = self.send("Target.attachToTarget",
                                 {"targetId": target["targetId"], "flatten": True},
                                 session=False)["sessionId"]
        self.send("Runtime.enable")
        self.send("Page.enable")
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        self.send("Page.navigate", {"url": url})

    def evaluate(self, expression):
        """The value of a JavaScript expression in the page (promises are awaited)."""
        result = self.send("Runtime.evaluate", {"expression": expression,
                                                "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise ChromiumError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression, timeout=60, interval=0.2):
        """Poll `expression` until it is truthy and return its value; raise on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise ChromiumError(f"{expression!r} still false after {timeout} s; page "
                                    f"console: {self.console[-10:]}")
            time.sleep(interval)

    def drag(self, points):
        """Press the left mouse button at the first (x, y) page point, move through the
        others and release it at the last, as a person drawing would."""
        def mouse(kind, x, y, buttons):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y,
                                                   "button": "left", "buttons": buttons,
                                                   "clickCount": 1})
        mouse("mousePressed", *points[0], 1)
        for x, y in points[1:]:
            mouse("mouseMoved", x, y, 1)
        mouse("mouseReleased", *points[-1], 0)

    def screenshot(self, path):
        """Save the page's viewport as a PNG file."""
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def close(self):
        try:
            if self.process.poll() is None:
                self.send("Browser.close", session=False, timeout=10)
                self.process.wait(10)
        except (ChromiumError, OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        finally:
            for fd in (self._to_browser, self._from_browser):
                try:
                    os.close(fd)
                except OSError:
                    pass
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def run_selftest(url, screenshot=None, timeout=120, width=1000, height=880):
    """Open the demo's `?selftest=1` URL, return the JSON it writes into #kbnn-selftest."""
    with Chromium() as browser:
        browser.open(url, width=width, height=height)
        text = browser.wait_for(
            "document.getElementById('kbnn-selftest')?.textContent", timeout=timeout)
        if screenshot:  # the page has drawn its last sample's bars before writing the JSON
            browser.screenshot(screenshot)
        result = json.loads(text)
        result["console"] = list(browser.console)
        return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the demo's URL with ?selftest=1")
    parser.add_argument("--screenshot", help="save a PNG of the page here")
    parser.add_argument("--timeout", type=float, default=120, help="seconds to wait (120)")
    args = parser.parse_args(argv)
    result = run_selftest(args.url, args.screenshot, args.timeout)
    print(json.dumps(result))
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
