"""Larq's config dicts read as kbnn objects.

Larq (on tf-keras, Keras 2) serializes a quantizer or a constraint as
`{"class_name": "SteSign", "config": {...}}`, with no "module" and no
"registered_name", or (in model files of Larq 0.13/0.14) with a "module" of
Larq's, such as `{"module": "larq.constraints", "class_name": "weight_clip",
...}`; Keras 3 can place neither. `from_larq_dict` gives the kbnn object it
names:

>>> from kbnn.larq_config import from_larq_dict
>>> from kbnn.constraints import WeightClip
>>> from_larq_dict({"class_name": "WeightClip", "config": {"clip_value": 0.5}},
...                {"WeightClip": WeightClip}).clip_value
0.5
>>> from_larq_dict({"module": "larq.constraints", "class_name": "weight_clip",
...                 "config": {"clip_value": 1}}, {"WeightClip": WeightClip}).clip_value
1
"""

__all__ = ["from_larq_dict", "is_larq_module"]


def is_larq_module(identifier):
    """Whether a config dict names one of Larq's modules ("larq.quantizers", ...)."""
    module = identifier.get("module") if isinstance(identifier, dict) else None
    return isinstance(module, str) and (module == "larq" or module.startswith("larq."))


def _class_name(name):
    """Larq's snake_case aliases ("weight_clip") as class names ("WeightClip")."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_")) if "_" in name else name


def from_larq_dict(identifier, classes):
    """The object a Larq-style `{"class_name", "config"}` dict names, or None.

    `classes` maps class names to kbnn classes. None means "not a Larq dict
    of one of these classes": anything else, including every dict Keras 3
    writes (those carry a module of their own), is left to the caller (and
    Keras). A dict that names a Larq module but a class kbnn lacks is an
    error, as Keras 3 could only fail on it less clearly.
    """
    if not isinstance(identifier, dict):
        return None
    larq_module = is_larq_module(identifier)
    if "module" in identifier and not larq_module:
        return None
    name = identifier.get("class_name")
    cls = None
    if isinstance(name, str):
        cls = classes.get(name) or classes.get(_class_name(name))
    if cls is None:
        if larq_module:
            raise ValueError(
                f"Larq's {name!r} ({identifier['module']}) has no kbnn counterpart; kbnn "
                f"reads: {', '.join(sorted(classes))}. Replace it in the Larq model (and "
                f"retrain or re-save it) before loading it with kbnn.")
        return None
    config = dict(identifier.get("config") or {})
    return cls.from_config(config)
