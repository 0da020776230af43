"""The docstring examples of the self-contained modules run and print what they show."""

import doctest

import keras
import numpy as np
import pytest

import kbnn
from kbnn import constraints, quantizers
from kbnn.export import bits


@pytest.mark.parametrize("module", [quantizers, constraints, bits, kbnn.zoo],
                         ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, extraglobs={"kbnn": kbnn, "np": np, "keras": keras},
                             optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
