"""The docstring examples of the self-contained modules run and print what they show."""

import doctest
import importlib

import numpy as np
import pytest

import kbnn
from kbnn import (activations, callbacks, constraints, context, distill, larq_config, layers,
                  math, metrics, optimizers, quantizer_ops, quantizers, tables)
from kbnn.export import bits, graph, plan, verify
from kbnn.train import multi_worker
from kbnn.train import record as train_record
from kbnn.train import settings as train_settings


@pytest.mark.parametrize("module", [
    kbnn, quantizers, constraints, layers, bits, kbnn.zoo, kbnn.zoo.fashion_mnist, kbnn.zoo.spec,
    kbnn.zoo.weights, distill, optimizers, quantizer_ops,
    importlib.import_module("kbnn.summary"), kbnn.export, plan, graph, verify, tables,
    larq_config, activations, math, context, callbacks, metrics, train_settings, train_record,
    multi_worker,
    importlib.import_module("kbnn.startup"),
], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    # Each example imports what it uses beyond kbnn and numpy.
    result = doctest.testmod(module, extraglobs={"kbnn": kbnn, "np": np},
                             optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
