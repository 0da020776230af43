"""Quickstart: train a small binary MLP on Fashion-MNIST and look at its bits.

    python examples/quickstart.py --data-dir ../shared/data/fashion_mnist --epochs 1
"""

import argparse

import keras

import kbnn
from kbnn.data import load_fashion_mnist
from kbnn.layers import QuantDense

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--data-dir", default=None, help="IDX directory (else $KBNN_DATA_DIR, else tfds)")
parser.add_argument("--epochs", type=int, default=1)
args = parser.parse_args()

binary = dict(kernel_quantizer="ste_sign", kernel_constraint="weight_clip", use_bias=False)
model = keras.Sequential([
    keras.Input((28, 28, 1)),
    keras.layers.Flatten(),
    QuantDense(128, **binary),                          # real input, binary weights
    keras.layers.BatchNormalization(),
    QuantDense(10, input_quantizer="ste_sign", **binary),  # binary input and weights
    keras.layers.BatchNormalization(),
])
kbnn.summary(model)

model.compile(keras.optimizers.Adam(1e-3),
              keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"])
train = load_fashion_mnist("train", data_dir=args.data_dir, batch_size=100, shuffle=True, seed=0)
test = load_fashion_mnist("test", data_dir=args.data_dir, batch_size=1000)
model.fit(train, epochs=args.epochs)
print(f"test accuracy: {model.evaluate(test, verbose=0)[1]:.4f}")
