"""What a family supplies to the exact checks: its :class:`CheckKit`.

The drivers :func:`models.checks.logp.compare_logp` (every form against an independent oracle)
and :func:`models.checks.logp.compare_compiled` (the compiled form against the PyMC one) are the
same loop for every family; what differs is here. A family names its kit in
:attr:`models.forms.base.Family.oracle` as ``"module:NAME"`` (production code imports no
checks, so the family record holds the kit's address and :func:`kit_of` imports it).

A parameter point is a plain dict of the kit's choosing (``mu``/``tau``/``sigma``,
``beta``/``tau``/``sigma``, ``mu``/``V``/``Sigma``; a family whose forms keep their effects, such
as a binomial or Poisson GLMM, puts the effects in it too and its oracle is then the sum of the
rows' log pmfs plus the effects' normal densities), with ``tau_over_sigma`` for the table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any

import numpy as np

__all__ = ["CheckKit", "Native", "kit_of", "split_point"]


@dataclass(frozen=True)
class Native:
    """A compiled density in the PyMC model's sampler coordinates.

    ``size``: the number of coordinates; ``evaluate(z) -> (logp, grad)``: the compiled kernel;
    ``point(z) -> {value variable: array}``: the same coordinates as PyMC's point;
    ``grad_of(g)``: PyMC's gradient (in its value-variable order) in the kernel's order.
    """

    size: int
    evaluate: Callable[[np.ndarray], tuple[float, np.ndarray]]
    point: Callable[[np.ndarray], dict]
    grad_of: Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class CheckKit:
    """A family's oracle, parameter points and likelihood map for the exact checks.

    Attributes
    ----------
    oracle : callable
        ``oracle(data, point) -> float``: the log density of all rows at ``point``, written
        independently of the forms (scipy).
    oracle_name : str
        The oracle in words, for the check's text.
    points : callable
        ``points(data, priors, n_points, rng) -> list[dict]``: random parameter points (each
        with ``tau_over_sigma``, log-spaced over 1e-4..1e2).
    integrated : callable
        ``integrated(model, data, priors, mode) -> f``, ``f(point) -> (loglik, prior)``: a PyMC
        form's log density minus its own prior terms (effects integrated out exactly where the
        form has them), and those prior terms.
    prior_logpdf : callable
        ``prior_logpdf(priors, point) -> float``: the priors' numpy density, to compare with the
        forms' prior terms.
    native : callable or None
        ``native(data, priors, model) -> Native``: the compiled ``sufficient`` density of the
        PyMC ``model``, or None where the family has no compiled form.
    prior_relative : bool
        Compare the prior terms by relative error (to ``rtol``) instead of by absolute
        difference (to :attr:`prior_atol`; PyMC's HalfStudentT computes log 2 in float32: a
        constant 2.0e-8 per term).
    extras : callable
        ``extras(data, points) -> {name: values}``: further independent implementations checked
        against the oracle (the multivariate numpy information form).
    n_points : int
        Default number of points.
    mode : callable
        ``mode(data) -> str``: the PyTensor mode of the compiled log densities (FAST_COMPILE: no
        C compilation for a few evaluations; FAST_RUN where a literal MvNormal is big).
    describe : callable
        ``describe(data) -> str``: the data in a few words, for the check's text.
    facts : callable
        ``facts(data) -> dict``: facts about the data added to the result's ``details``.
    joint_oracle : callable or None
        ``joint_oracle(data, point) -> float``: the joint log density of the rows and the
        effects in ``point``; where set, the latent forms (:attr:`Form.latent`) keep their
        effects (``integrated`` returns their joint density) and are compared with it, the
        others with ``oracle`` (the GLMMs, whose effects have no closed-form integral).
    joint_oracle_name : str
        The joint oracle in words.
    """

    oracle: Callable[[Any, dict], float]
    oracle_name: str
    points: Callable[..., list[dict]]
    integrated: Callable[..., Callable[[dict], tuple[float, float]]]
    prior_logpdf: Callable[[Any, dict], float]
    native: Callable[..., Native] | None = None
    prior_relative: bool = False
    prior_atol: float = 1e-6
    extras: Callable[[Any, list[dict]], Mapping[str, np.ndarray]] = field(
        default=lambda data, points: {})
    n_points: int = 12
    mode: Callable[[Any], str] = field(default=lambda data: "FAST_COMPILE")
    describe: Callable[[Any], str] = field(
        default=lambda data: f"{data.n_groups} clusters, sizes {int(data.sizes.min())}-"
                             f"{int(data.sizes.max())}")
    facts: Callable[[Any], dict] = field(default=lambda data: {})
    joint_oracle: Callable[[Any, dict], float] | None = None
    joint_oracle_name: str = ""


def kit_of(family) -> CheckKit:
    """The check kit the family record names (:attr:`Family.oracle`, ``"module:NAME"``)."""
    if not family.oracle:
        raise ValueError(f"the {family.name} family names no check kit (Family.oracle)")
    module, _, name = family.oracle.partition(":")
    return getattr(import_module(module), name)


def split_point(model) -> tuple[int, Callable[[np.ndarray], dict]]:
    """The size of ``model``'s sampler coordinates, and ``z -> {value variable: array}``."""
    names = [v.name for v in model.value_vars]
    start = model.initial_point()
    sizes = [int(np.size(start[n])) for n in names]
    shapes = [np.shape(start[n]) for n in names]

    def point(z: np.ndarray) -> dict:
        return {n: v.reshape(sh) for n, v, sh in
                zip(names, np.split(z, np.cumsum(sizes)[:-1]), shapes, strict=True)}

    return sum(sizes), point
