"""What a loss is, to the code that uses it: its terms, the argument that weighs each one and its
default, and the methods it supports. Each loss file defines one ``LossSpec``; ``registry.py``
lists them, and training, the toy, the widgets, the command line and the benchmark iterate it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Term:
    name: str  # the key in the dict of terms: "invariance"
    coefficient: str  # the argument that weighs it: "sim_coeff"
    default: float  # the paper's weight
    label: str  # for people: "invariance", "on-diagonal"
    help: str = ""  # what the weight does, for the command line's --help

    def describe(self) -> str:
        """The weight's help text, with its default."""
        what = self.help or f"weight of the {self.label} term"
        return f"{what} (default {self.default:g}; 0 switches the term off)"


@dataclass(frozen=True)
class LossSpec:
    name: str  # "vicreg": the name in configurations and on the command line
    title: str  # "VICReg"
    terms: tuple[Term, ...]
    terms_function: Callable  # f(z1, z2, *, terms=..., method=..., ...) -> {term name: tensor}
    loss_function: Callable  # f(z1, z2, *, <coefficients>, method=..., ...) -> tensor
    module: type  # the torch.nn.Module form of the loss
    methods: tuple[str, ...]  # how the decorrelation term may be computed: what a configuration may ask for

    @property
    def defaults(self) -> dict[str, float]:
        """{coefficient: default weight}, e.g. {"sim_coeff": 25.0, ...}."""
        return {term.coefficient: term.default for term in self.terms}

    def default(self, coefficient: str) -> float:
        return self.defaults[coefficient]

    def weights(self, values: Mapping[str, float]) -> dict[str, float]:
        """{term name: weight} from a mapping that holds the coefficients by name (keyword
        arguments, a ``TrainConfig.as_dict()``); a missing coefficient takes its default."""
        return {term.name: float(values.get(term.coefficient, term.default)) for term in self.terms}
