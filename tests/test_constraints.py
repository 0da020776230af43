import numpy as np

from kbnn import constraints
from kbnn.constraints import WeightClip


def test_weight_clip_clips_to_the_range():
    w = np.array([-3.0, -1.0, -0.2, 0.0, 0.7, 1.0, 2.5], "float32")
    np.testing.assert_array_equal(WeightClip()(w), np.float32([-1, -1, -0.2, 0, 0.7, 1, 1]))
    np.testing.assert_array_equal(WeightClip(0.5)(w), np.float32([-0.5, -0.5, -0.2, 0, 0.5, 0.5, 0.5]))
    clipped = WeightClip(0.5)(w.astype("float64"))
    assert clipped.dtype == "float64"
    np.testing.assert_array_equal(clipped, np.clip(w.astype("float64"), -0.5, 0.5))


def test_weight_clip_by_string_and_config():
    assert isinstance(constraints.get("weight_clip"), WeightClip)
    assert WeightClip.from_config(WeightClip(0.3).get_config()).clip_value == 0.3
    assert constraints.get("non_neg").__class__.__name__ == "NonNeg"
    assert constraints.get(None) is None
