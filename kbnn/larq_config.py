"""Larq's config dicts read as kbnn objects.

Larq (on tf-keras, Keras 2) serializes a quantizer or a constraint as
`{"class_name": "SteSign", "config": {...}}`, with no "module" and no
"registered_name"; Keras 3 cannot place such a dict. `from_larq_dict` gives
the kbnn object it names:

>>> from kbnn.larq_config import from_larq_dict
>>> from kbnn.constraints import WeightClip
>>> from_larq_dict({"class_name": "WeightClip", "config": {"clip_value": 0.5}},
...                {"WeightClip": WeightClip}).clip_value
0.5
"""

__all__ = ["from_larq_dict"]


def from_larq_dict(identifier, classes):
    """The object a Larq-style `{"class_name", "config"}` dict names, or None.

    `classes` maps class names to kbnn classes. None means "not a Larq dict
    of one of these classes": anything else, including every dict Keras 3
    writes (those carry "module"), is left to the caller (and Keras).
    """
    if not isinstance(identifier, dict) or "module" in identifier:
        return None
    cls = classes.get(identifier.get("class_name"))
    return None if cls is None else cls.from_config(identifier.get("config") or {})
