"""Every loss of the library, by the name configurations and the command line use.

Adding a loss is one file (its functions, its module and its ``SPEC``; see vicreg.py) plus one
entry here: docs/extending.md walks through it.
"""

from __future__ import annotations

from . import barlow_twins, vicreg
from ._spec import LossSpec, Term

LOSSES: dict[str, LossSpec] = {spec.name: spec for spec in (vicreg.SPEC, barlow_twins.SPEC)}


def loss_spec(name: str) -> LossSpec:
    """The spec of the loss called ``name`` ("vicreg", "barlow"); a clear error for any other."""
    try:
        return LOSSES[name]
    except (KeyError, TypeError):
        raise ValueError(f"loss must be one of {tuple(LOSSES)}; got {name!r}.") from None


__all__ = ["LOSSES", "LossSpec", "Term", "loss_spec"]
