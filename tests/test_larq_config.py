import pytest

from kbnn.constraints import WeightClip
from kbnn.larq_config import from_larq_dict
from kbnn.quantizers import SteSign

CLASSES = {"SteSign": SteSign, "WeightClip": WeightClip}


def test_larq_dict_becomes_the_named_class_with_its_config():
    quantizer = from_larq_dict({"class_name": "SteSign", "config": {"clip_value": 0.5}}, CLASSES)
    assert type(quantizer) is SteSign and quantizer.clip_value == 0.5
    assert from_larq_dict({"class_name": "WeightClip", "config": None}, CLASSES).clip_value == 1.0
    assert from_larq_dict({"class_name": "WeightClip"}, CLASSES).clip_value == 1.0


def test_anything_else_is_left_to_the_caller():
    keras3 = {"module": "kbnn.quantizers", "class_name": "SteSign", "config": {},
              "registered_name": "kbnn>SteSign"}
    assert from_larq_dict(keras3, CLASSES) is None
    assert from_larq_dict({"class_name": "NonNeg", "config": {}}, CLASSES) is None
    assert from_larq_dict("ste_sign", CLASSES) is None
    assert from_larq_dict(None, CLASSES) is None


def test_larq_model_file_dicts_carry_larq_modules_and_aliases():
    clip = {"module": "larq.constraints", "class_name": "weight_clip", "config": {"clip_value": 2},
            "registered_name": "weight_clip"}
    assert from_larq_dict(clip, CLASSES).clip_value == 2
    sign = {"module": "larq.quantizers", "class_name": "SteSign",
            "config": {"name": "ste_sign", "trainable": True, "dtype": "float32",
                       "clip_value": 1.25}, "registered_name": "SteSign"}
    assert from_larq_dict(sign, CLASSES).clip_value == 1.25


def test_a_larq_class_kbnn_lacks_is_an_error_naming_it():
    with pytest.raises(ValueError, match=r"Larq's 'FancySign' \(larq.quantizers\) has no kbnn"):
        from_larq_dict({"module": "larq.quantizers", "class_name": "FancySign", "config": {}},
                       CLASSES)
