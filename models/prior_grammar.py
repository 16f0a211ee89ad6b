"""``--prior``: one grammar for every family, parsed into prior objects, one error message.

A spec is ``NAME[LABEL]=FAMILY:ARGS``::

    normal:LOC:SCALE   normal:SCALE (LOC 0)        -> NormalPrior
    halfnormal:SCALE   halfcauchy:SCALE   exponential:MEAN   halfstudentt:SCALE[:NU]
                                                    -> ScalePrior
    beta:A:B                                        -> BetaPrior

:func:`parse_prior` reads the text into a :class:`PriorSpec` (the prior object and the name it
is for); a family then says which NAMEs it takes and what kind of prior each needs (``targets``
of :func:`apply_priors`): one-way ``mu``, ``tau``, ``sigma``; the variance partition ``mu``,
``total``, ``icc``; the mixed models ``intercept``, ``beta``/``beta[x]``, ``tau``/``tau[f]``,
``sigma``. Every refusal is one line naming the spec, the reason and the grammar.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from varcomp.models.errors import DataError
from varcomp.models.priors import (
    FAMILIES,
    NormalPrior,
    PartitionPriors,
    Priors,
    ScalePrior,
    check_relative,
    check_relative_scale,
)

__all__ = ["GRAMMAR", "BetaPrior", "PriorSpec", "apply_priors", "parse_partition_overrides",
           "parse_prior", "parse_prior_overrides"]

GRAMMAR = ("NAME=FAMILY:ARGS with FAMILY:ARGS one of normal:LOC:SCALE (or normal:SCALE, LOC 0), "
           "halfnormal:SCALE, halfcauchy:SCALE, exponential:MEAN, halfstudentt:SCALE[:NU], "
           "beta:A:B")


@dataclass(frozen=True)
class BetaPrior:
    """Beta(a, b) on a share (the ICC of the variance partition)."""

    a: float
    b: float

    def __post_init__(self) -> None:
        for name in ("a", "b"):
            v = float(getattr(self, name))
            if not (0 < v <= 1e3 and math.isfinite(v)):
                raise DataError(f"a Beta prior needs 0 < {name} <= 1000, got {v:g}")


@dataclass(frozen=True)
class PriorSpec:
    """One parsed ``--prior``: the parameter's name, an optional ``[label]``, the prior."""

    name: str
    label: str | None
    prior: NormalPrior | ScalePrior | BetaPrior
    text: str


def _bad(text: str, why: str, names: Sequence[str] = ()) -> DataError:
    which = f"; NAME one of {', '.join(names)} for this model" if names else ""
    return DataError(f"bad prior '{text}' ({why}): use {GRAMMAR}{which}")


def parse_prior(text: str, names: Sequence[str] = ()) -> PriorSpec:
    """Parse ``NAME[LABEL]=FAMILY:ARGS`` into a :class:`PriorSpec` (see the module docstring)."""
    name, eq, rhs = str(text).partition("=")
    name = name.strip()
    if not eq or not name:
        raise _bad(text, "no NAME=", names)
    label = None
    if "[" in name:
        name, _, label = name.partition("[")
        if not label.endswith("]") or not label[:-1].strip():
            raise _bad(text, "a label is written NAME[LABEL]", names)
        label = label[:-1].strip()
    family, *args = (part.strip() for part in rhs.split(":"))
    family = family.lower()
    try:
        nums = [float(a) for a in args]
    except ValueError:
        raise _bad(text, f"arguments must be numbers, got {':'.join(args)!r}", names) from None
    counts = {"normal": (1, 2), "beta": (2,), "halfstudentt": (1, 2)}
    if family not in (*FAMILIES, "normal", "beta"):
        raise _bad(text, f"unknown family {family!r}", names)
    if len(nums) not in counts.get(family, (1,)):
        raise _bad(text, f"{family} takes {' or '.join(map(str, counts.get(family, (1,))))} "
                         f"number(s), got {len(nums)}", names)
    try:
        if family == "normal":
            prior = NormalPrior(*(nums if len(nums) == 2 else [0.0, nums[0]]))
        elif family == "beta":
            prior = BetaPrior(*nums)
        else:
            prior = ScalePrior(family, *nums)
    except DataError as exc:
        raise _bad(text, str(exc), names) from None
    return PriorSpec(name, label, prior, str(text))


Target = tuple[type, Callable]
"""A NAME's prior type and ``setter(priors, spec) -> priors``."""


def apply_priors(priors, specs: Sequence[str] | None, targets: dict[str, Target],
                 hints: dict[str, str] | None = None):
    """Apply each ``--prior`` spec to ``priors`` through the family's ``targets``.

    ``hints`` names, for a NAME this model does not take, what would make it apply (e.g.
    ``icc`` needs ``--variance-prior partition``).
    """
    names = list(targets)
    for text in specs or []:
        spec = parse_prior(text, names)
        if spec.name not in targets:
            hint = (hints or {}).get(spec.name)
            raise _bad(text, hint or f"this model has no parameter {spec.name!r}", names)
        kind, setter = targets[spec.name]
        if not isinstance(spec.prior, kind):
            need = {NormalPrior: "normal", BetaPrior: "beta",
                    ScalePrior: "/".join(FAMILIES)}[kind]
            raise _bad(text, f"{spec.name} takes a {need} prior", names)
        priors = setter(priors, spec)
    return priors


def _no_label(setter: Callable) -> Callable:
    def apply(priors, spec: PriorSpec):
        if spec.label is not None:
            raise _bad(spec.text, f"{spec.name} takes no [label]")
        return setter(priors, spec.prior)
    return apply


def _field(name: str) -> Callable:
    return _no_label(lambda priors, prior: replace(priors, **{name: prior}))


SD_HINTS = {n: "total and icc are priors of --variance-prior partition" for n in ("total", "icc")}
PARTITION_HINTS = {n: f"with --variance-prior partition {n} is derived: set total and icc"
                   for n in ("tau", "sigma")}


def parse_prior_overrides(priors: Priors, specs: Sequence[str] | None) -> Priors:
    """One-way sd priors: ``mu=normal:LOC:SCALE``, ``tau=``/``sigma=FAMILY:SCALE[:NU]``."""
    priors = apply_priors(priors, specs, {"mu": (NormalPrior, _field("mu")),
                                          "tau": (ScalePrior, _field("tau")),
                                          "sigma": (ScalePrior, _field("sigma"))}, SD_HINTS)
    check_relative(priors)
    return priors


def parse_partition_overrides(priors: PartitionPriors, specs: Sequence[str] | None
                              ) -> PartitionPriors:
    """The variance partition: ``mu=normal:LOC:SCALE``, ``total=FAMILY:SCALE``, ``icc=beta:A:B``."""
    def icc(p, prior):
        return replace(p, a=prior.a, b=prior.b)

    priors = apply_priors(priors, specs, {"mu": (NormalPrior, _field("mu")),
                                          "total": (ScalePrior, _field("total")),
                                          "icc": (BetaPrior, _no_label(icc))}, PARTITION_HINTS)
    check_relative_scale(priors.total.scale, priors.scale, "total scale")
    return priors
