"""Build the browser demo's model file and serve the page: `python web/build.py --serve`.

    python web/build.py            # writes web/models/bnn_mlp_1024_packed_b1.tflite
    python web/build.py --serve    # ... then `npm ci` if needed, and serves web/ on 127.0.0.1:8000
    python web/build.py --samples ../shared/data/fashion_mnist   # rewrites web/samples.json

The page (`web/index.html`) runs the released 784-1024-10 binary MLP, exported with
1-bit packed weights and a static batch of 1 (LiteRT.js refuses a dynamic batch
dimension), with LiteRT.js (`@litertjs/core`, pinned in `web/package-lock.json`). The
`.tflite` file is built, not committed; `web/samples.json` (16 Fashion-MNIST test images,
at least one of each class) is committed so the page works without the data set.
"""

import argparse
import base64
import http.server
import json
import os
import pathlib
import subprocess
import sys

WEB = pathlib.Path(__file__).resolve().parent
REPO = WEB.parent
RELEASED = REPO / "saved_models" / "bnn_mlp_1024_deterministic.keras"
MODEL = WEB / "models" / "bnn_mlp_1024_packed_b1.tflite"
SAMPLES = WEB / "samples.json"
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def build_model(path=MODEL, keras_file=RELEASED):
    """Export `keras_file` packed, batch size 1, to `path` (atomically); return `path`."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    import kbnn  # noqa: F401  (registers kbnn's layers for load_model)
    import kbnn.export

    model = keras.models.load_model(keras_file)
    tflite = kbnn.export.to_tflite(model, weights="packed", batch_size=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    kbnn.export.write_atomically(str(path), tflite)
    return path


def choose_samples(labels, count=16):
    """Indices of `count` test images: the first of each class, then the lowest others."""
    first = [int(next(i for i, label in enumerate(labels) if label == c)) for c in range(10)]
    others = [i for i in range(len(labels)) if i not in first][:count - len(first)]
    return sorted(first + others)


def write_samples(data_dir, path=SAMPLES, count=16):
    """Write `count` Fashion-MNIST test images (uint8 pixels, base64) and labels as JSON."""
    import numpy as np

    from kbnn.data import load_fashion_mnist

    images, labels = load_fashion_mnist("test", data_dir=data_dir, as_numpy=True)
    indices = choose_samples(labels, count)
    pixels = np.rint(images[indices].reshape(len(indices), 784) * 255).astype(np.uint8)
    samples = {
        "source": "Fashion-MNIST test split",
        "class_names": CLASS_NAMES,
        "samples": [{"index": i, "label": int(labels[i]),
                     "pixels": base64.b64encode(p.tobytes()).decode("ascii")}
                    for i, p in zip(indices, pixels)],
    }
    path.write_text(json.dumps(samples, indent=1) + "\n")
    return path


def read_samples(path=SAMPLES):
    """The bundled samples as float32 images (N, 28, 28, 1) in [0, 1], as the page makes them."""
    import numpy as np

    samples = json.loads(path.read_text())["samples"]
    pixels = np.stack([np.frombuffer(base64.b64decode(s["pixels"]), np.uint8)
                       for s in samples])
    return pixels.reshape(-1, 28, 28, 1).astype(np.float32) / np.float32(255)


def ensure_node_modules():
    """Install the pinned LiteRT.js (`npm ci`) unless web/node_modules already has it."""
    if not (WEB / "node_modules" / "@litertjs" / "core" / "wasm").is_dir():
        print("npm ci (installs the LiteRT.js version pinned in package-lock.json)", flush=True)
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=WEB, check=True)


class DemoRequestHandler(http.server.SimpleHTTPRequestHandler):
    """Serves web/, with the WebAssembly MIME type that streaming compilation needs."""

    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".wasm": "application/wasm", ".js": "text/javascript"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=str(WEB), **kwargs)

    def log_message(self, format, *args):  # one line per request is noise for the demo
        pass


def make_server(port=8000, host="127.0.0.1"):
    """An HTTP server for web/ on `host`:`port` (0 picks a free port); call serve_forever."""
    return http.server.ThreadingHTTPServer((host, port), DemoRequestHandler)


def serve(port=8000, host="127.0.0.1"):
    """Serve web/ over HTTP until interrupted."""
    with make_server(port, host) as server:
        print(f"serving the demo at http://{host}:{server.server_port}/ (Ctrl-C stops)",
              flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help="serve web/ after building")
    parser.add_argument("--port", type=int, default=8000, help="port for --serve (8000)")
    parser.add_argument("--rebuild", action="store_true",
                        help="export the model again even if the file exists")
    parser.add_argument("--samples", metavar="DATA_DIR",
                        help="rewrite samples.json from the Fashion-MNIST IDX files in DATA_DIR")
    args = parser.parse_args(argv)
    if args.samples:
        print(f"wrote {write_samples(args.samples)}", flush=True)
    if args.rebuild or not MODEL.exists():
        print(f"exporting {RELEASED.name} (packed, batch 1)", flush=True)
        print(f"wrote {build_model()} ({MODEL.stat().st_size:,} bytes)", flush=True)
    if args.serve:
        ensure_node_modules()
        serve(args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
