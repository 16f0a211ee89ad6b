"""Exact log densities: one driver each, the same for every family.

- :func:`compare_logp`: the log-likelihood of each form (its whole log density without Jacobian
  minus its own prior terms, latent effects integrated out exactly) equals the family's
  independent oracle (scipy) at random points to 1e-9; the prior terms are compared with the
  numpy priors separately.
- :func:`compare_compiled`: the compiled form (:mod:`models.compiled`), what ``varcomp fit``
  samples, against the PyMC model it implements: gradients equal, log densities equal up to one
  constant.

What differs by family (the oracle, the random points, how a form's density becomes a
likelihood, the compiled kernel's coordinates) is the family's
:class:`~models.checks.kit.CheckKit`, named by :attr:`Family.oracle`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from varcomp.models.checks.base import CheckResult
from varcomp.models.checks.kit import kit_of
from varcomp.models.data import ClusteredData
from varcomp.models.forms import family_of
from varcomp.models.forms.base import Form

__all__ = ["compare_compiled", "compare_logp"]


def compare_logp(
    data: ClusteredData,
    names: Sequence[str] | None = None,
    n_points: int | None = None,
    seed: int = 0,
    rtol: float = 1e-9,
    *,
    priors=None,
    builders: Mapping[str, Callable] | None = None,
    mode: str | None = None,
    family=None,
) -> CheckResult:
    r"""Every form's log-likelihood equals the family's oracle to relative ``rtol``.

    At ``n_points`` random points of the family's kit (tau / sigma log-spaced over 1e-4..1e2),
    each form's log-likelihood (its whole log density without Jacobian, minus its own prior
    terms, latent effects integrated out exactly: the kit's ``integrated``) and each of the
    kit's ``extras`` must equal the kit's ``oracle``. A kit with a ``joint_oracle`` (the GLMMs,
    random slopes) puts the effects in its points, and its latent forms (:attr:`Form.latent`)
    give their joint density of rows and effects, compared with that oracle. Forms that do not
    apply to the data (:attr:`Form.applies`, e.g. ``sufficient`` of an unbalanced crossed
    design) are reported as skipped. The prior terms are compared with the kit's numpy prior
    density: by absolute difference (PyMC's HalfStudentT computes log 2 in float32, a constant
    2.0e-8 per term that cannot move a posterior but would swamp a 1e-9 comparison of whole
    densities) or, for the multivariate kit, by relative error after PyMC's wrong-signed LKJ
    constant.

    Parameters
    ----------
    data : ClusteredData
    names : sequence of str, optional
        Forms to check (default: every form of the family).
    n_points, seed, rtol
        Number of random points (default: the kit's), their seed, the relative tolerance.
    priors : optional
        Default ``family.default_priors(data)``.
    builders : mapping, optional
        Extra ``name -> builder(data, *, priors)`` or ``name -> Form`` to check (e.g. a
        :data:`BROKEN` form; a Form's ``latent`` says which oracle a kit with a
        ``joint_oracle`` compares it with; a bare builder is an integrated form).
    mode : str, optional
        PyTensor compilation mode of the log densities (default: the kit's ``mode(data)``).
    family : Family, optional
        Default :func:`models.forms.family_of`.

    Returns
    -------
    CheckResult
        ``table``: one row per point with tau/sigma, the truth (``truth``: the oracle;
        ``truth_joint``: the kit's joint oracle, what latent forms are compared with when it
        has one), each form's value and its relative error; ``details``: ``max_rel_err``
        per form, ``failed``, ``skipped``, ``prior_max_abs_diff`` or ``prior_max_rel_err``.
    """
    family = family or family_of(data)
    kit = kit_of(family)
    priors = priors or family.default_priors(data)
    n_points = n_points or kit.n_points
    mode = mode or kit.mode(data)
    chosen, skipped = {}, {}
    for nm in (list(family.forms) if names is None else list(names)):
        form = family.form(nm)
        if why := form.applies(data):
            skipped[nm] = why
        else:
            chosen[nm] = form
    for nm, b in (builders or {}).items():
        chosen[nm] = b if isinstance(b, Form) else Form(nm, "extra builder", b, lambda d: {})
    # latent forms keep their effects: compared with the joint oracle where the kit has one
    joint = {nm: kit.joint_oracle is not None and f.latent for nm, f in chosen.items()}
    funcs = {nm: kit.integrated(f.build(data, priors=priors), data, priors, mode)
             for nm, f in chosen.items()}
    points = kit.points(data, priors, n_points, np.random.default_rng(seed))
    extras = dict(kit.extras(data, points))
    table = pd.DataFrame({"tau_over_sigma": [p["tau_over_sigma"] for p in points]})
    truths = {}
    if extras or not all(joint.values()):
        truths[False] = table["truth"] = np.array([kit.oracle(data, p) for p in points])
    if any(joint.values()):
        truths[True] = table["truth_joint"] = np.array([kit.joint_oracle(data, p)
                                                        for p in points])
    prior_np = np.array([kit.prior_logpdf(priors, p) for p in points])
    values = {nm: (v, truths[False]) for nm, v in extras.items()}
    prior_err = {}
    for nm, f in funcs.items():
        out = np.array([f(p) for p in points])
        values[nm] = (out[:, 0], truths[joint[nm]])
        diff = np.abs(out[:, 1] - prior_np)
        prior_err[nm] = float(np.max(diff / np.abs(prior_np) if kit.prior_relative else diff))
    max_rel = {}
    for nm, (vals, truth) in values.items():
        rel = np.abs(vals - truth) / np.abs(truth)
        rel[~np.isfinite(vals)] = np.inf
        table[nm], table[f"rel_err_{nm}"] = vals, rel
        max_rel[nm] = float(rel.max())
    prior_tol = rtol if kit.prior_relative else kit.prior_atol
    failed = [nm for nm, r in max_rel.items() if not r <= rtol]
    failed += [f"{nm} (prior)" for nm, e in prior_err.items()
               if not e <= prior_tol and nm not in failed]
    oracle_name = " / ".join([kit.oracle_name] * (False in truths)
                             + [kit.joint_oracle_name] * (True in truths))
    lines = [f"{family.name} log-likelihood vs {oracle_name} at {n_points} points, "
             f"tau/sigma 1e-4..1e2 ({kit.describe(data)})"]
    lines += [f"{nm}: max relative error {r:.1e} {'ok' if r <= rtol else 'FAILS'} (rtol {rtol:g})"
              for nm, r in max_rel.items()]
    lines += [f"{nm}: skipped ({why})" for nm, why in skipped.items()]
    if prior_err:
        worst = max(prior_err.values())
        lines.append(f"PyMC prior terms vs the numpy prior: max "
                     f"{'relative error' if kit.prior_relative else '|diff|'} {worst:.1e} "
                     f"{'ok' if worst <= prior_tol else 'FAILS'} (tolerance {prior_tol:g})")
    key = "prior_max_rel_err" if kit.prior_relative else "prior_max_abs_diff"
    return CheckResult("compare_logp", not failed, table, "\n".join(lines),
                       {"max_rel_err": max_rel, "failed": failed, "rtol": rtol,
                        key: prior_err, "skipped": skipped, **kit.facts(data)})


def compare_compiled(data: ClusteredData, priors=None, n_points: int = 20, seed: int = 0,
                     rtol: float = 1e-8, *, family=None) -> CheckResult:
    """The compiled ``sufficient`` density against the PyMC ``sufficient`` form it implements.

    The compiled density (:mod:`models.compiled`) is what ``varcomp fit`` samples.

    At ``n_points`` random points of the sampler's coordinates (standard normal x 1.5): the
    gradients agree to relative ``rtol`` (of the largest component) and the log densities differ
    by one constant, the same at every point to ``rtol`` relative (PyMC rounds a few constants to
    float32 and has the LKJ normaliser's sign flipped: DEVELOPERS.md), so the posteriors are the
    same. Exact, no false alarms. The kit's ``native`` maps the coordinates.
    """
    family = family or family_of(data)
    kit = kit_of(family)
    priors = priors or family.default_priors(data)
    model = family.form("sufficient").build(data, priors=priors)
    native = kit.native(data, priors, model)
    logp = model.compile_logp(mode="FAST_COMPILE")
    dlogp = model.compile_dlogp(mode="FAST_COMPILE")
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n_points):
        z = 1.5 * rng.standard_normal(native.size)
        point = native.point(z)
        value, grad = native.evaluate(z)
        want = native.grad_of(np.asarray(dlogp(point)))
        rows.append({"logp_pymc": float(logp(point)), "logp_compiled": value,
                     "grad_rel_err": float(np.max(np.abs(grad - want)) / np.max(np.abs(want)))})
    table = pd.DataFrame(rows)
    offset = table["logp_compiled"] - table["logp_pymc"]
    spread = float(offset.max() - offset.min()) / float(table["logp_pymc"].abs().max())
    worst = float(table["grad_rel_err"].max())
    passed = bool(worst <= rtol and spread <= rtol)
    text = (f"compiled sufficient vs PyMC ({family.name}) at {n_points} points: gradient max "
            f"relative error {worst:.1e}, log-density offset {float(offset.mean()):+.3g} constant "
            f"to {spread:.1e} (rtol {rtol:g}): {'ok' if passed else 'FAILS'}")
    return CheckResult("compiled sufficient", passed, table, text,
                       {"max_grad_rel_err": worst, "logp_offset": float(offset.mean()),
                        "logp_offset_spread": spread, "rtol": rtol})
