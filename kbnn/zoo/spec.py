"""One declared spec per zoo builder: each argument's type, default, help and CLI flag.

A builder is a function whose signature holds the defaults; `@builder(...)`
declares once what each of its arguments is, and the builder's checks, its
docstring's Args section, the released-weight lookup, the training record and
the command line all read that declaration:

>>> from kbnn.zoo import BUILDERS
>>> spec = BUILDERS["bnn_mlp"].spec
>>> [(a.name, a.type.__name__, a.default, a.flag, a.architecture)
...  for a in spec.arguments.values()]  # doctest: +NORMALIZE_WHITESPACE
[('hidden_units', 'tuple', (1024,), '--hidden', True),
 ('binarization', 'str', 'deterministic', '--binarization', True),
 ('input_dropout', 'float', 0.1, '--input-dropout', False),
 ('dropout', 'float', 0.2, '--dropout', False)]

Architecture arguments decide the weights (so which released file fits a
call); the others, such as dropout rates, change only training. A call's
arguments, defaults included, in JSON form:

>>> spec.record({"hidden_units": (128,)})
{'hidden_units': [128], 'binarization': 'deterministic', 'input_dropout': 0.1, 'dropout': 0.2}
>>> spec.architecture({"hidden_units": (128,)})
{'hidden_units': [128], 'binarization': 'deterministic'}

`add_cli_options` and `cli_model_args` make the same arguments command-line
options (`python -m kbnn.train bnn_mlp --hidden 128`).
"""

import argparse
import dataclasses
import functools
import inspect
import numbers
import textwrap

from kbnn.zoo.weights import load_weights

__all__ = ["Argument", "Widths", "Choice", "Integer", "Rate", "Flag", "ModelSpec", "builder",
           "add_cli_options", "cli_model_args"]

# Parameters every builder may take that are not part of its spec: they decide
# neither the architecture nor training, so they are neither recorded nor CLI options.
CALL_PARAMETERS = {
    "seed": "seed of the stochastic binarizers (None: random).",
    "weights": "None (random initialization); the name of a data set with released weights "
               "for these architecture arguments ({released}); a weights file (.keras, "
               ".weights.h5, .h5); or a URL with the file's hash, "
               "'https://host/file.weights.h5#sha256=<hex digest>', downloaded once into "
               "$KERAS_HOME/models (~/.keras/models) by keras.utils.get_file.",
    "name": "the model's name (None: one made from the arguments).",
}


class Widths:
    """One or more positive layer widths: a tuple in Python, a list in JSON,
    `--flag 128 64` on the command line."""

    type = tuple

    def check(self, name, value):
        try:
            widths = tuple(value)
        except TypeError:
            widths = value
        if not (isinstance(widths, tuple) and widths and all(
                isinstance(w, numbers.Integral) and not isinstance(w, bool) and w > 0
                for w in widths)):
            raise ValueError(f"{name}={widths!r}: give one or more positive layer widths, "
                             f"e.g. {name}=(128,).")
        return tuple(int(w) for w in widths)  # Keras layers take Python ints only

    def to_json(self, value):
        return list(value)

    def cli(self):
        return {"type": int, "nargs": "+", "metavar": "N"}

    def show(self, value):
        return " ".join(map(str, value))


@dataclasses.dataclass(frozen=True)
class Choice:
    """One of a few strings."""

    choices: tuple
    type = str

    def check(self, name, value):
        if value not in self.choices:
            raise ValueError(f"{name}={value!r}: use one of {', '.join(self.choices)}.")
        return value

    def to_json(self, value):
        return value

    def cli(self):
        return {"choices": self.choices}

    def show(self, value):
        return str(value)


@dataclasses.dataclass(frozen=True)
class Integer:
    """An integer of at least `minimum`."""

    minimum: int = 1
    type = int

    def check(self, name, value):
        if not (isinstance(value, numbers.Integral) and not isinstance(value, bool)
                and value >= self.minimum):
            raise ValueError(f"{name}={value!r}: give an integer >= {self.minimum}.")
        return int(value)

    def to_json(self, value):
        return value

    def cli(self):
        return {"type": int, "metavar": "N"}

    def show(self, value):
        return str(value)


class Rate:
    """A rate in [0, 1), such as a dropout rate."""

    type = float

    def check(self, name, value):
        if not (isinstance(value, numbers.Real) and not isinstance(value, bool)
                and 0 <= value < 1):
            raise ValueError(f"{name}={value!r}: give a rate in [0, 1).")
        return float(value)

    def to_json(self, value):
        return value

    def cli(self):
        return {"type": float, "metavar": "RATE"}

    def show(self, value):
        return str(value)


class Flag:
    """True or False; `--flag` / `--no-flag` on the command line."""

    type = bool

    def check(self, name, value):
        if not isinstance(value, bool):
            raise ValueError(f"{name}={value!r}: give True or False.")
        return value

    def to_json(self, value):
        return value

    def cli(self):
        return {"action": argparse.BooleanOptionalAction}

    def show(self, value):
        return str(value)


@dataclasses.dataclass(frozen=True)
class Argument:
    """A builder argument: its name, kind (which gives its type), help text and CLI
    flag, and whether it is an architecture argument (decides the weights).

    Its default is the builder signature's, filled in by `@builder`.
    """

    name: str
    kind: object
    help: str
    flag: str = None  # None: "--" + name with dashes
    architecture: bool = True
    default: object = None

    def __post_init__(self):
        if self.flag is None:
            object.__setattr__(self, "flag", "--" + self.name.replace("_", "-"))

    @property
    def type(self):
        """The Python type of the argument's checked value."""
        return self.kind.type

    def check(self, value):
        """`value` checked and normalized (e.g. widths to a tuple of ints), or ValueError."""
        return self.kind.check(self.name, value)

    def to_json(self, value):
        return self.kind.to_json(self.check(value))


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """The declared arguments of one builder, in signature order, and the data sets
    it has released weights for (what `weights=` accepts by name)."""

    builder: str
    arguments: dict
    released: tuple = ()

    def check(self, model_args):
        """Every declared argument's checked value, defaults filled in.

        `model_args` may hold the builder's other parameters (seed, weights, name):
        they pass through. An argument the builder does not take is a TypeError.
        """
        unknown = set(model_args) - set(self.arguments) - set(CALL_PARAMETERS)
        if unknown:
            raise TypeError(f"{self.builder}() takes no argument {', '.join(sorted(unknown))}; "
                            f"its arguments: {', '.join(self.arguments)}.")
        values = dict(model_args)
        for name, argument in self.arguments.items():
            values[name] = argument.check(model_args.get(name, argument.default))
        return values

    def record(self, model_args):
        """All declared arguments of a call, defaults included, JSON-ready (what a
        released model's JSON holds under "model", besides "builder")."""
        values = self.check(model_args)
        return {name: argument.to_json(values[name])
                for name, argument in self.arguments.items()}

    def architecture(self, model_args):
        """The architecture arguments of a call, defaults included, JSON-ready."""
        return {name: value for name, value in self.record(model_args).items()
                if self.arguments[name].architecture}

    def matches(self, config, model_args):
        """Whether a released model's JSON "model" section fits a call's architecture.

        A JSON written before an argument existed holds that argument's default.
        """
        if config.get("builder") != self.builder:
            return False
        return self.architecture(model_args) == self.released_architecture(config)

    def released_architecture(self, config):
        """The architecture arguments a released model's JSON "model" section records."""
        return {name: argument.to_json(config.get(name, argument.default))
                for name, argument in self.arguments.items() if argument.architecture}


def builder(*arguments, released=()):
    """Declare a zoo builder's arguments: `@builder(Argument(...), ..., released=(...))`.

    The decorated function's signature gives the defaults; every parameter but
    `seed` and `name` must be declared. The builder gets checked, normalized
    values, and the decorator adds the `weights=None` parameter (before `name`):
    it loads the weights into the built model (`kbnn.zoo.weights.load_weights`).
    The docstring gains an Args section written from the declarations.
    """
    declared = {argument.name: argument for argument in arguments}

    def decorate(body):
        signature = inspect.signature(body)
        parameters = list(signature.parameters.values())
        undeclared = [p.name for p in parameters
                      if p.name not in declared and p.name not in CALL_PARAMETERS]
        missing = [name for name in declared if name not in signature.parameters]
        if undeclared or missing or "weights" in signature.parameters:
            raise TypeError(f"@builder for {body.__name__}: declare every parameter but seed and "
                            f"name (undeclared: {undeclared}), declare only parameters "
                            f"(not in the signature: {missing}), and leave weights= to "
                            f"@builder.")
        for p in parameters:
            if p.name in declared:
                declared[p.name].check(p.default)  # a default the builder refuses is a bug
        spec = ModelSpec(body.__name__, {
            p.name: dataclasses.replace(declared[p.name], default=p.default)
            for p in parameters if p.name in declared}, tuple(released))
        weights_parameter = inspect.Parameter(
            "weights", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None)
        at = next((i for i, p in enumerate(parameters) if p.name == "name"), len(parameters))
        public = signature.replace(
            parameters=parameters[:at] + [weights_parameter] + parameters[at:])

        @functools.wraps(body)
        def build(*args, **kwargs):
            bound = public.bind(*args, **kwargs)
            bound.apply_defaults()
            values = spec.check(bound.arguments)
            weights = values.pop("weights")
            return load_weights(body(**values), spec, values, weights)

        build.__signature__ = public
        build.__doc__ = _with_args_section(body.__doc__, spec, public)
        build.spec = spec
        return build

    return decorate


def _with_args_section(doc, spec, signature):
    lines = []
    for name in signature.parameters:
        if name in spec.arguments:
            argument = spec.arguments[name]
            text = f"{argument.help} Default {argument.default!r}; {argument.flag}."
        else:
            released = ", ".join(repr(r) for r in spec.released) or "none"
            text = CALL_PARAMETERS[name].format(released=released)
        lines += textwrap.wrap(f"{name}: {text}", 80, break_on_hyphens=False,
                               initial_indent=" " * 8,
                               subsequent_indent=" " * 12)
    return (doc or "").rstrip() + "\n\n    Args:\n" + "\n".join(lines) + "\n"


def add_cli_options(parser, builders):
    """Add an option per declared argument of `builders` ({name: builder}) to `parser`.

    Builders that declare an argument of the same name share its option; its
    destination is the argument's name and its default None, so that an option
    not given leaves the builder's own default (listed in the help per builder).

    >>> import argparse
    >>> from kbnn.zoo import BUILDERS
    >>> parser = argparse.ArgumentParser()
    >>> add_cli_options(parser, BUILDERS)
    >>> cli_model_args(parser.parse_args(["--hidden", "128"]), "bnn_mlp", BUILDERS)
    {'hidden_units': (128,)}
    """
    for flag, uses in _options(builders).items():
        first = uses[0][1]
        defaults = "; ".join(f"{name}: {argument.kind.show(argument.default)}"
                             for name, argument in uses)
        parser.add_argument(flag, dest=first.name, default=None,
                            help=f"{first.help.rstrip('.')} (default {defaults})",
                            **first.kind.cli())


def cli_model_args(options, model, builders):
    """The arguments of builder `model` given as options (an argparse namespace):
    {argument name: checked value}; ValueError for a bad value or for an option
    given that `model` does not take."""
    spec = builders[model].spec
    model_args = {}
    for flag, uses in _options(builders).items():
        name = uses[0][1].name
        value = getattr(options, name, None)
        if value is None:
            continue
        if name not in spec.arguments:
            raise ValueError(f"{model} does not take {flag}; its options: "
                             f"{', '.join(a.flag for a in spec.arguments.values())}.")
        model_args[name] = spec.arguments[name].check(value)
    return model_args


def _options(builders):
    """{flag: [(builder name, argument), ...]}, checking that a shared flag means one thing."""
    options = {}
    for name, build in builders.items():
        for argument in build.spec.arguments.values():
            uses = options.setdefault(argument.flag, [])
            if uses and (uses[0][1].name, type(uses[0][1].kind)) != (argument.name,
                                                                      type(argument.kind)):
                raise TypeError(f"{argument.flag} is {uses[0][0]}'s {uses[0][1].name} and "
                                f"{name}'s {argument.name}: give one of them another flag.")
            uses.append((name, argument))
    return options
