"""The docstring examples of the self-contained modules run and print what they show."""

import doctest
import importlib

import keras
import numpy as np
import pytest

import kbnn
from kbnn import constraints, distill, optimizers, quantizers
from kbnn.export import bits


@pytest.mark.parametrize("module", [kbnn, quantizers, constraints, bits, kbnn.zoo, distill, optimizers,
                                    importlib.import_module("kbnn.summary")],
                         ids=lambda m: m.__name__)
def test_docstring_examples(module):
    model = keras.Sequential([  # the `model` of the summary module's examples
        keras.Input((784,)),
        kbnn.layers.QuantDense(128, kernel_quantizer="ste_sign", use_bias=False),
        kbnn.layers.QuantDense(10, input_quantizer="ste_sign", kernel_quantizer="ste_sign"),
    ])
    result = doctest.testmod(module, extraglobs={"kbnn": kbnn, "np": np, "keras": keras,
                                                 "model": model},
                             optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
