"""Released weights: where they are found, and what a builder's `weights=` loads.

>>> list_models()["bnn_mlp_1024_deterministic"]["hidden_units"]
[1024]

A released model is NAME.keras with NAME.json (its builder arguments and
measured metrics). They are looked up, first match winning, in

1. `$KBNN_MODELS_DIR`, if set;
2. the copies installed with the package (`kbnn/zoo/saved_models/` in a wheel or
   a `pip install .`, which setup.py builds from the repository's `saved_models/`);
3. the repository's `saved_models/` (an editable install, `pip install -e .`).

`weights="fashion_mnist"` picks the released model whose architecture arguments
are the call's. `weights=` also takes a weights file, or a URL ending in the
file's sha256 (pip's `#sha256=` convention), which `keras.utils.get_file`
downloads once into `$KERAS_HOME/models` (`~/.keras/models`) and checks:

    kbnn.zoo.bnn_mlp((16,), weights="https://host/mlp.weights.h5#sha256=<hex digest>")
"""

import json
import os
import pathlib
import re
import urllib.parse

import keras

__all__ = ["list_models", "models_dir", "models_dirs", "load_weights"]

_INSTALLED = pathlib.Path(__file__).resolve().parent / "saved_models"
_REPOSITORY = pathlib.Path(__file__).resolve().parents[2] / "saved_models"
_URL_SCHEMES = ("http", "https", "ftp", "file")


def models_dirs():
    """The directories searched for released models, in lookup order."""
    directories = [pathlib.Path(os.environ["KBNN_MODELS_DIR"])] if os.environ.get(
        "KBNN_MODELS_DIR") else []
    return directories + [d for d in (_INSTALLED, _REPOSITORY) if d.is_dir()]


def models_dir():
    """The first directory of the lookup: `$KBNN_MODELS_DIR`, else the released models
    installed with the package, else the repository's saved_models/."""
    directories = models_dirs()
    return directories[0] if directories else _REPOSITORY


def _released():
    """{name: (path of NAME.keras, the JSON's "model" section)}, first directory winning."""
    released = {}
    for directory in models_dirs():
        for path in sorted(directory.glob("*.json")):
            if path.stem not in released and path.with_suffix(".keras").exists():
                released[path.stem] = (path.with_suffix(".keras"),
                                       json.loads(path.read_text())["model"])
    return released


def list_models():
    """Released models as {name: builder arguments}, from every directory of the lookup.

    >>> sorted(list_models())[:2]
    ['bnn_cnn_deterministic', 'bnn_cnn_shortcuts_deterministic']
    """
    return {name: config for name, (_, config) in _released().items()}


def load_weights(model, spec, model_args, weights):
    """Load `weights` (see `CALL_PARAMETERS["weights"]` in `kbnn.zoo.spec`) into `model`,
    built by `spec`'s builder with `model_args`; return it."""
    if weights is None:
        return model
    if weights in spec.released:
        model.load_weights(_released_path(spec, model_args, weights))
    elif isinstance(weights, str) and urllib.parse.urlsplit(weights).scheme in _URL_SCHEMES:
        model.load_weights(_download(weights))
    elif isinstance(weights, (str, os.PathLike)) and pathlib.Path(weights).is_file():
        model.load_weights(weights)
    else:
        names = ", ".join(repr(r) for r in spec.released)
        raise ValueError(
            f"weights={weights!r}: not a file. Use None (random initialization), "
            f"{names + ' (released weights), ' if names else ''}the path of a weights file, "
            f"or a URL with its hash, e.g. 'https://host/file.weights.h5#sha256=<hex digest>'.")
    return model


def _released_path(spec, model_args, dataset):
    released = _released()
    for path, config in released.values():
        if spec.matches(config, model_args):
            return path
    call = lambda arguments: f"{spec.builder}(" + ", ".join(
        f"{k}={v!r}" for k, v in sorted(arguments.items())) + ")"
    same_builder = [f"{name}: {call(spec.released_architecture(config))}"
                    for name, (_, config) in released.items()
                    if config.get("builder") == spec.builder]
    searched = ", ".join(map(str, models_dirs())) or "no directory"
    raise ValueError(
        f"No released {dataset} weights for {call(spec.architecture(model_args))} in "
        f"{searched}. Released {spec.builder} models: {'; '.join(same_builder) or 'none'} "
        f"(pass those arguments). Train one with `python -m kbnn.train {spec.builder} ...`, "
        f"or use weights=None.")


def _download(url):
    """`url` (with its `#sha256=` fragment) fetched into the Keras cache; its path."""
    parts = urllib.parse.urlsplit(url)
    digest = re.fullmatch(r"sha256=([0-9a-fA-F]{64})", parts.fragment)
    if not digest:
        raise ValueError(
            f"weights={url!r}: end the URL with the file's hash, #sha256=<64 hex digits> "
            f"(e.g. from `sha256sum`), so that a corrupted or replaced download is refused.")
    origin = urllib.parse.urlunsplit(parts._replace(fragment=""))
    # $KERAS_HOME is read now, not only when Keras was imported; get_file would
    # cache in /tmp/.keras instead of a home directory that does not exist yet.
    home = os.environ.get("KERAS_HOME")
    if home:
        os.makedirs(home, exist_ok=True)
    return keras.utils.get_file(
        fname=pathlib.PurePosixPath(parts.path).name, origin=origin, file_hash=digest[1],
        hash_algorithm="sha256", cache_subdir="models", cache_dir=home)
