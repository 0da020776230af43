"""Deploy: export a zoo model to a bit-packed .tflite and classify images with LiteRT.

    python examples/deploy_tflite.py --data-dir ../shared/data/fashion_mnist

Uses the released bnn_mlp 784-1024-10 when saved_models/ has it (else a model
trained for one epoch here), writes bnn_mlp.tflite, then loads that file in
the stock LiteRT interpreter, the same runtime as on Android and iOS.
"""

import argparse

import numpy as np
from ai_edge_litert.interpreter import Interpreter

import kbnn.export
from kbnn.data import CLASS_NAMES, load_fashion_mnist
from kbnn.zoo import bnn_mlp

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--data-dir", help="IDX directory (else $KBNN_DATA_DIR, else tfds)")
parser.add_argument("--output", default="bnn_mlp.tflite")
args = parser.parse_args()

images, labels = load_fashion_mnist("test", data_dir=args.data_dir, as_numpy=True)
try:
    model = bnn_mlp((1024,), weights="fashion_mnist")
except ValueError:
    print("no released weights here: training one epoch instead")
    import keras

    model = bnn_mlp((1024,))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = load_fashion_mnist("train", data_dir=args.data_dir, as_numpy=True)
    model.fit(x, y, batch_size=100, epochs=1, verbose=2)

result = kbnn.export.export_tflite(model)           # binary kernels packed 1 bit each
print(kbnn.export.verify.compare(model, result.tflite, images[:1000]))
kbnn.export.write_atomically(args.output, result.tflite)
print(f"wrote {args.output}: {len(result.tflite):,} bytes")

# What an app does: load the file in LiteRT and classify one image at a time.
interpreter = Interpreter(model_path=args.output, num_threads=1)
interpreter.allocate_tensors()
inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
for image, label in zip(images[:8], labels[:8]):
    interpreter.set_tensor(inp["index"], image[None])
    interpreter.invoke()
    logits = interpreter.get_tensor(out["index"])[0]
    print(f"predicted {CLASS_NAMES[int(np.argmax(logits))]:<12} true {CLASS_NAMES[label]}")
