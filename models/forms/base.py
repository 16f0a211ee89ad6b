"""The types: a model family, and a posterior's parameterisation (form) as a record of functions.

A :class:`Family` is what one kind of data (one-way, multivariate, ...) is fitted with: its forms,
its default priors, the names it reports, how group effects are added to forms that integrate them
out, its frequentist estimates. A :class:`Form` is one parameterisation of that family's
posterior: its PyMC builder (data in ``pm.Data`` containers, so checks and SBC compile one model
and swap data sets), the container values for any data of the same design, its compiled route
(or none), whether it exists for given data (:attr:`Form.applies`) and why ``--model all``
leaves it out as too costly (:attr:`Form.skip`). Every consumer (fit, checks, report, CLI,
benchmarks) loops over ``family.forms`` and asks; nothing else tests the family: what differs by
kind of model is a field of the family record (:attr:`Family.oracle`, :attr:`Family.scalar_tau`,
:attr:`Family.design`, :attr:`Family.anova`), set once in the family's module.

``applies`` and ``skip`` are different questions. ``applies(data)`` gives the reason a form has
no model for these data (the crossed ``sufficient`` form of an unbalanced design: no closed
form); such a form is absent, by name too (``--model sufficient`` is refused with that reason),
and the checks leave it out. ``skip(data)`` gives the reason ``--model all`` leaves a form out
that exists but costs too much here (the literal MvNormal of big clusters); asked for by name,
it runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from varcomp.models.errors import DataError
from varcomp.models.likelihoods import GAUSSIAN, Likelihood

__all__ = ["Family", "Form", "always_applies", "never_skipped"]


def always_applies(data: Any) -> str | None:
    """The default of :attr:`Form.applies`: the form exists for any data of its family."""
    return None


def never_skipped(data: Any) -> str | None:
    """The default of :attr:`Form.skip`: the form runs on any data of its family."""
    return None


@dataclass(frozen=True)
class Form:
    """One parameterisation of a family's posterior.

    Attributes
    ----------
    name : str
        One of :data:`models.forms.FORM_NAMES` (a family holds the forms that apply to it).
    summary : str
        One line saying what the form is (README and report tables).
    build : callable
        ``build(data, priors) -> pm.Model``; the data enter through ``pm.Data`` containers.
    data_values : callable
        ``data_values(data) -> {container: array}``: the containers' values for data of the same
        design (nutpie's ``compiled.with_data(**values)``).
    latent : bool
        Whether the posterior has the group effects itself (else the family adds them).
    compiled : callable or None
        ``compiled(data, priors)``: a ready nutpie model of this form's posterior in
        hand-written machine code (:mod:`models.compiled`), or None when the priors are not
        covered; the attribute itself is None for forms without a compiled route.
    applies : callable
        ``applies(data) -> reason or None``: why this form has no model for ``data`` (absent:
        refused by name, left out by ``--model all`` and the checks), or None.
    skip : callable
        ``skip(data) -> reason or None``: why ``--model all`` leaves this existing form out
        here as too costly (asked for by name, it runs).
    """

    name: str
    summary: str
    build: Callable[..., Any]
    data_values: Callable[[Any], dict]
    latent: bool = False
    compiled: Callable[..., Any] | None = None
    skip: Callable[[Any], str | None] = never_skipped
    applies: Callable[[Any], str | None] = always_applies


@dataclass(frozen=True)
class Family:
    """A model family: its forms and everything fitting and reporting need to know about it.

    Attributes
    ----------
    name : str
        ``oneway``, ``multivariate``, ...
    title : str
        The model in words, for reports.
    forms : mapping of str to Form
        The parameterisations, in display order.
    default_form : str
        What ``varcomp fit`` uses without ``--model`` (see :meth:`default`).
    default_priors : callable
        ``default_priors(data) -> priors`` scaled to the data.
    parse_priors : callable
        ``parse_priors(data, specs) -> priors`` from ``--prior NAME=FAMILY:SCALE`` strings.
    summary_vars : tuple of str
        Posterior variables of the parameter table, the diagnostics gate and summary.json.
    compare_vars : tuple of str
        Variables the posterior comparison of forms looks at.
    add_effects : callable
        ``add_effects(idata, data, seed)``: group effects for a form that integrated them out.
    estimates : callable or None
        ``estimates(data) -> {"ml": ..., "reml": ...}`` (frequentist optima), if any.
    reference : callable or None
        ``reference(data, priors)``: a quadrature posterior to compare fits with, if any.
    outcomes : callable
        ``outcomes(data) -> list``: the labels along the ``outcome`` dim, or ``[None]``.
    matrices : tuple of str
        Posterior matrices over (outcome, outcome_bis) shown in the report.
    derive : callable or None
        ``derive(idata, data, likelihood)``: per-draw derived quantities added after sampling,
        the same for every form (e.g. the adjusted and unadjusted ICC of the regression family),
        given the family's :attr:`likelihood`.
    cluster_loglik : callable or None
        ``cluster_loglik(data, posterior, likelihood=) -> (S, L)``: each top-level cluster's log
        density,
        its effects integrated out (leave-one-cluster-out; :mod:`models.pointwise`), or None.
    total_loglik : callable or None
        ``total_loglik(data, posterior, likelihood=) -> (S,) or None``: each draw's log
        density of all rows, for families without a per-cluster one (crossed), so
        power-scaling still has its sum.
    log_prior : callable or None
        ``log_prior(data, posterior, priors) -> (S,)``: the log prior per draw (power-scaling).
    conditional_loglik : callable or None
        ``conditional_loglik(data, posterior, effects) -> (S,) or None``: each draw's log
        density of all rows given the latent forms' effects, where the family's response is not
        Gaussian (None: :func:`models.pointwise.conditional_loglik`, the Gaussian one).
    new_cluster : callable or None
        ``new_cluster(data, posterior, rng)``: draws of a new cluster's effect and mean
        (:mod:`models.predictive`).
    partition_priors : callable or None
        ``partition_priors(data, specs)``: the variance-partition prior (total variance and
        shares), with ``--prior`` overrides, where the family offers one.
    headline : str
        The share of variance ``varcomp fit`` prints per form (``icc``, or ``vpc`` by component
        where there are several components).
    likelihood : Likelihood
        The response distribution (:mod:`models.likelihoods`): its parameters beyond the linear
        predictor, residual variance (the shares' denominator), prior scale, cluster density and
        predictive replicates. Gaussian for every family today.
    oracle : str or None
        Where the family's check kit lives, ``"module:NAME"``
        (:class:`models.checks.kit.CheckKit`: the independent oracle of its log density, random
        parameter points, how a form's density becomes a likelihood, the compiled kernel's
        coordinates). An address, not an import: production code imports no checks.
    design : bool
        Whether the family's data carry a formula's design (fixed effects, grouping factors)
        that the report shows and its effects are read from.
    scalar_tau : bool
        Whether the mixed model's tau is one number per draw (one grouping factor: the
        variable ``group_effect`` over dim ``group``) rather than one per factor (dim
        ``factor``, effects ``u_<factor>``).
    anova : bool
        Whether the report shows the one-way ANOVA of each response.
    effect_vars : tuple or None
        ``((variable, dim), ...)``: the posterior's group-effect variables where they are not
        the mixed families' (``group_effect`` / ``u_<factor>``); the random-slopes family's
        ``b`` over (``group``, ``coef``).
    fit_tables : callable or None
        ``fit_tables(idata, data) -> {key: table}``: family-specific tables added to each fit's
        entry of summary.json (the random-slopes family's ``icc_curve``), or None.
    """

    name: str
    title: str
    forms: Mapping[str, Form]
    default_form: str
    default_priors: Callable[[Any], Any]
    parse_priors: Callable[[Any, list[str]], Any]
    summary_vars: tuple[str, ...]
    compare_vars: tuple[str, ...]
    add_effects: Callable[..., Any]
    estimates: Callable[[Any], dict] | None = None
    reference: Callable[..., Any] | None = None
    outcomes: Callable[[Any], list] = field(default=lambda data: [None])
    matrices: tuple[str, ...] = ()
    derive: Callable[..., Any] | None = None
    fallback_form: str | Callable[[Any], str] | None = None
    cluster_loglik: Callable[..., Any] | None = None
    total_loglik: Callable[..., Any] | None = None
    log_prior: Callable[..., Any] | None = None
    conditional_loglik: Callable[..., Any] | None = None
    new_cluster: Callable[..., Any] | None = None
    partition_priors: Callable[..., Any] | None = None
    headline: str = "icc"
    likelihood: Likelihood = GAUSSIAN
    oracle: str | None = None
    design: bool = False
    scalar_tau: bool = False
    anova: bool = False
    fit_tables: Callable[..., dict] | None = None
    effect_vars: tuple[tuple[str, str], ...] | None = None

    def default(self, data: Any) -> str:
        """The form ``varcomp fit`` uses without ``--model``.

        :attr:`default_form`, or :attr:`fallback_form` where the default does not apply to
        these data (its ``applies``).
        """
        if self.fallback_form and self.forms[self.default_form].applies(data):
            fallback = self.fallback_form
            return fallback(data) if callable(fallback) else fallback
        return self.default_form

    def form(self, name: str) -> Form:
        """The form called ``name`` (a one-line error naming the family's forms otherwise)."""
        try:
            return self.forms[name]
        except KeyError:
            raise DataError(f"unknown model '{name}' for the {self.name} family: choose one of "
                             f"{', '.join(self.forms)}") from None

    def form_for(self, name: str, data: Any) -> Form:
        """:meth:`form`, refused with its reason where the form does not apply to ``data``."""
        form = self.form(name)
        if why := form.applies(data):
            raise DataError(f"--model {name} does not apply to these data: {why}")
        return form

    def absent(self, data: Any) -> dict[str, str]:
        """The family's forms that do not apply to ``data``, with the reason."""
        return {n: why for n, f in self.forms.items() if (why := f.applies(data))}

    def skipped(self, data: Any) -> dict[str, str]:
        """Forms ``--model all`` leaves out for ``data`` (absent or too costly), with the reason."""
        return {n: why for n, f in self.forms.items() if (why := f.applies(data) or f.skip(data))}
