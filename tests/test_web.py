"""The browser demo (web/) classifies its samples in headless Chromium as Python LiteRT does.

The page runs the packed 784-1024-10 BNN, exported with a static batch of 1, on
LiteRT.js (WebAssembly); `index.html?selftest=1` writes its predictions and logits into
#kbnn-selftest. Served from web/ by a local http.server on 127.0.0.1 (a free port), driven
through Chromium's DevTools pipe (web/headless.py, standard library only).

Measured here (@litertjs/core 2.5.3 in Chromium 156 vs ai-edge-litert 2.3.0 on x86,
16 samples): identical predictions and bit-identical logits; the test requires both.

Without chromium or web/node_modules (`npm ci` in web/) the tests skip, except in CI
(`CI=true`), where .ci/run installs them and a missing piece fails.
"""

import importlib.util
import json
import os
import pathlib
import shutil
import threading

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
WEB = REPO / "web"


def _load(name):
    # Under their own names: a plain `import build` would shadow PyPA's `build` package.
    spec = importlib.util.spec_from_file_location(f"kbnn_web_{name}", WEB / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _load("build")  # web/build.py: exports the model, serves web/
headless = _load("headless")  # web/headless.py: drives chromium over its DevTools pipe


def require(condition, reason):
    """Skip on a developer's machine, fail in CI, where everything must be installed."""
    if condition:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: .ci/run should have installed it)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def demo_url():
    """The demo served from web/ on 127.0.0.1, with its model freshly exported."""
    require(headless.find_chromium() is not None, "no chromium on PATH (apt-get install chromium)")
    require((WEB / "node_modules" / "@litertjs" / "core" / "wasm").is_dir(),
            "web/node_modules has no @litertjs/core; run `npm ci` in web/")
    build.build_model()  # the file the page loads, from the current exporter
    server = build.make_server(port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/index.html"
    server.shutdown()
    server.server_close()


def python_logits(model_path, images):
    """Logits of every image, one invoke each (the file's batch is 1), by x86 LiteRT."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model_path), num_threads=1)
    interpreter.allocate_tensors()
    [inp], [out] = interpreter.get_input_details(), interpreter.get_output_details()
    assert list(inp["shape_signature"]) == [1, 28, 28, 1], "the page needs a static batch of 1"
    logits = []
    for image in images:
        interpreter.set_tensor(inp["index"], image[None])
        interpreter.invoke()
        logits.append(interpreter.get_tensor(out["index"])[0].copy())
    return np.stack(logits)


def test_selftest_matches_python_litert(demo_url, tmp_path):
    screenshot = tmp_path / "screenshot.png"
    result = headless.run_selftest(f"{demo_url}?selftest=1", screenshot=str(screenshot))
    assert "error" not in result, f"the page failed: {result['error']}; console: " \
                                  f"{result['console']}"
    assert result["model"] == build.MODEL.name
    images = build.read_samples()
    expected = python_logits(build.MODEL, images)
    logits = np.array(result["logits"], np.float32)
    assert logits.shape == expected.shape == (len(images), 10)
    assert result["predictions"] == expected.argmax(1).tolist()
    np.testing.assert_array_equal(logits, expected)
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("KBNN_WEB_SCREENSHOT"):  # refresh the README's picture on request
        shutil.copyfile(screenshot, os.environ["KBNN_WEB_SCREENSHOT"])


def test_picking_a_sample_shows_its_class_and_bars(demo_url):
    """Clicking a sample shows Python's prediction for it, ten bars and a latency."""
    samples = json.loads(build.SAMPLES.read_text())
    names = samples["class_names"]
    pick = 3
    truth = names[samples["samples"][pick]["label"]]
    assert truth != names[samples["samples"][0]["label"]]  # the page opens on sample 0
    expected = python_logits(build.MODEL, build.read_samples()[pick:pick + 1])[0]
    with headless.Chromium() as browser:
        browser.open(demo_url)
        browser.wait_for("document.getElementById('status')?.textContent === 'Ready.'")
        browser.evaluate(f"document.querySelectorAll('.sample')[{pick}].click()")
        browser.wait_for("document.querySelector('.bar.truth .name')?.textContent === "
                         + json.dumps(f"{truth} (true)"))
        assert browser.evaluate("document.getElementById('predicted').textContent") == \
            names[int(expected.argmax())]
        widths = browser.evaluate(
            "[...document.querySelectorAll('.bar .fill')].map(e => parseFloat(e.style.width))")
        latency = browser.evaluate("document.getElementById('latency').textContent")
    probabilities = np.exp(expected - expected.max())
    probabilities /= probabilities.sum()
    np.testing.assert_allclose(widths, 100 * probabilities, atol=0.051)  # shown to 0.1%
    assert latency.endswith("ms per image (median of 7 runs)")


def test_drawing_is_classified_as_python_litert_classifies_it(demo_url):
    """A stroke drawn with the mouse is averaged to 28x28 and classified like in Python."""
    with headless.Chromium() as browser:
        browser.open(demo_url)
        browser.wait_for("document.getElementById('status')?.textContent === 'Ready.'")
        browser.evaluate("document.getElementById('clear').click()")
        box = browser.evaluate("(({x, y}) => [x, y])(document.getElementById('draw')"
                               ".getBoundingClientRect())")
        # a trouser-like shape: two vertical strokes joined at the top
        for stroke in ([(110, 40), (140, 40), (170, 40)], [(110, 40), (100, 150), (95, 250)],
                       [(170, 40), (180, 150), (185, 250)]):
            browser.drag([(box[0] + x, box[1] + y) for x, y in stroke])
        last = browser.wait_for("window.kbnnLast?.pixels.filter(v => v > 0).length > 40 "
                                "&& window.kbnnLast")
        status = browser.evaluate("document.getElementById('status').textContent")
    assert status == "Ready."
    pixels = np.array(last["pixels"], np.uint8)
    assert pixels.max() > 200 and (pixels == 0).sum() > 392  # light strokes on black
    image = pixels.reshape(1, 28, 28, 1).astype(np.float32) / np.float32(255)
    np.testing.assert_array_equal(np.array(last["logits"], np.float32),
                                  python_logits(build.MODEL, image)[0])


def test_page_reports_a_missing_model(demo_url):
    """?model= naming an absent file says which file and how to build it."""
    result = headless.run_selftest(f"{demo_url}?selftest=1&model=absent.tflite", timeout=60)
    assert "models/absent.tflite: HTTP 404" in result["error"]
    assert "python web/build.py" in result["error"]
