r"""Posterior predictive checks and group effects for the report, as plain data (no HTML).

The one-way families replicate cluster means and sds from their sufficient statistics
(:func:`ppc`); families with fixed effects replicate whole data sets (:func:`ppc_design`). The
group effects are whatever the posterior holds, one caterpillar per factor (:func:`caterpillars`).
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

from varcomp.analyses.report.compute import (
    CATERPILLAR_MAX,
    ECDF_POINTS,
    HDI_PROB,
    PPC_DRAWS,
    PPC_MIN_DRAWS,
    PPC_SHOWN,
    PPC_VALUES,
    flat,
    hdi_array,
    pick,
    thin_index,
)

__all__ = ["caterpillars", "effect_sources", "ppc", "ppc_design"]


def ppc(post, data, outcomes: list, likelihood, seed: int = 0) -> list[dict]:
    r"""Posterior predictive replicates of cluster means and within-cluster sds, per outcome.

    For each (thinned) posterior draw, replicate data of the observed cluster sizes:
    M_l ~ N(0, tau^2), and the cluster means and sds of n_l rows around mu + M_l from the
    likelihood's ``replicate_stats`` (Gaussian: xbar_l = mu + M_l + (sigma / sqrt(n_l)) z and,
    independently (Cochran's theorem), s_l^2 = sigma^2 chi^2_{n_l - 1} / (n_l - 1)), at O(L)
    cost per draw and for every form. Also the posterior predictive p-values
    P(T_rep >= T_obs) of three spread statistics.
    """
    rng = np.random.default_rng(seed)
    out = []
    for k, o in enumerate(outcomes):
        n, xbar, ss = data.stats.column(k)
        mu, tau = (flat(pick(post[v], o)) for v in ("mu", "tau"))
        # at most PPC_VALUES replicated clusters in all (memory and time O(1e7) at 1e5 clusters)
        idx = thin_index(mu.size, max(PPC_MIN_DRAWS, min(PPC_DRAWS, PPC_VALUES // n.size)))
        mu, tau = mu[idx, None], tau[idx, None]
        own = {p: flat(pick(post[p], o))[idx] for p in likelihood.params}
        S, L = mu.shape[0], n.size
        xbar_rep, s_rep = likelihood.replicate_stats(mu + tau * rng.standard_normal((S, L)), n,
                                                     own, rng)
        multi = n >= 2
        s_obs = np.sqrt(ss[multi] / (n[multi] - 1))
        suffix = "" if o is None else f" [{o}]"
        tests = []
        for stat, obs, rep in (("sd of cluster means", xbar, xbar_rep),
                               ("sd of within-cluster sds", s_obs, s_rep),
                               ("max within-cluster sd", s_obs, s_rep)):
            if obs.size < 2:
                continue
            t_obs = float(obs.max() if stat.startswith("max") else obs.std())
            t_rep = rep.max(axis=1) if stat.startswith("max") else rep.std(axis=1)
            tests.append({"stat": stat + suffix, "observed": t_obs,
                          "replicated": float(np.median(t_rep)),
                          "p": float(np.mean(t_rep >= t_obs))})
        panels = [{"what": f"cluster means{suffix}", **_ecdfs(xbar, xbar_rep)},
                  {"what": f"within-cluster sds{suffix}", **_ecdfs(s_obs, s_rep)}]
        out.append({"outcome": o, "panels": panels, "tests": tests,
                    "shown": int(min(S, PPC_SHOWN)), "design": False})
    return out


def _level_stats(y: np.ndarray, order: np.ndarray, starts: np.ndarray, counts: np.ndarray):
    """Per row of ``y`` (draws x rows): the means and sds (ddof 1) of each level's rows.

    ``order`` sorts the rows by level, ``starts`` is each level's first position in that order.
    """
    ys = y[..., order]
    s1 = np.add.reduceat(ys, starts, axis=-1)
    s2 = np.add.reduceat(ys * ys, starts, axis=-1)
    mean = s1 / counts
    var = (s2 - s1 * mean) / np.maximum(counts - 1, 1)
    return mean, np.sqrt(np.maximum(var, 0.0))


def ppc_design(post, data, likelihood, seed: int = 0) -> list[dict]:
    r"""Posterior predictive replicates of whole data sets for a formula's design.

    For each (thinned) posterior draw, rows from the likelihood's ``replicate`` around
    X beta + sum_f tau_f z_f[level of the row] (Gaussian: plus sigma e) with fresh z_f,
    e ~ N(0, 1): new levels of every factor, as the model says data
    of this design would look. Compared with the data: the means of each factor's levels and
    the within-level sds of the last (finest) factor, as ECDFs, with posterior predictive
    p-values of their spread. O(draws x N), at most ``PPC_VALUES`` replicated values.

    A non-Gaussian ``likelihood`` (its ``replicate_rows``) draws the rows from the linear
    predictor X beta + offset + sum_f tau_f z_f instead, and both sides are compared as each
    row's proportion (successes / trials) or rate (count / exp(offset)).
    """
    rng = np.random.default_rng(seed)
    design = data.design
    if design.X is None:  # statistics only (chunked or Dask): no rows to compare with
        return []
    y, X, N = data.y[:, 0], design.X, data.n_obs
    idx = thin_index(post.sizes["chain"] * post.sizes["draw"],
                     max(PPC_MIN_DRAWS, min(PPC_DRAWS, PPC_VALUES // max(N, 1))))
    S = idx.size
    beta = post["beta"].transpose("chain", "draw", ...).values.reshape(-1, X.shape[1])[idx]
    tau = post["tau"].transpose("chain", "draw", ...).values.reshape(-1, len(design.factors))
    glm = likelihood.replicate_rows is not None
    rep = beta @ X.T
    if not glm:  # the likelihood's own noise around the mean (Gaussian: sigma e)
        rep = likelihood.replicate(rep, {p: flat(post[p])[idx] for p in likelihood.params}, rng)
    for f, t in zip(design.factors, tau[idx].T, strict=True):
        rep += (t[:, None] * rng.standard_normal((S, f.m)))[:, f.codes]
    if glm:  # rows drawn by the likelihood; compared as proportions or rates
        values = likelihood.containers(data)
        offset = values.get("offset", np.zeros(N))
        per = values["trials"] if "trials" in values else np.exp(offset)
        rep = likelihood.replicate_rows(rep + offset, values.get("trials"), data.link, rng) / per
        y = y / per
    panels, tests = [], []
    last = len(design.factors) - 1
    for i, f in enumerate(design.factors):
        order = np.argsort(f.codes, kind="stable")
        counts = np.bincount(f.codes, minlength=f.m)
        starts = np.r_[0, np.cumsum(counts)[:-1]]
        m_obs, s_obs = _level_stats(y, order, starts, counts)
        m_rep, s_rep = _level_stats(rep, order, starts, counts)
        stats = [(f"means of {f.name}", m_obs, m_rep, f"sd of {f.name} means")]
        if i == last:
            multi = counts >= 2
            stats.append((f"within-{f.name} sds", s_obs[multi], s_rep[:, multi],
                          f"sd of within-{f.name} sds"))
        for what, obs, rp, stat in stats:
            panels.append({"what": what, **_ecdfs(obs, rp)})
            if obs.size >= 2:
                t_obs, t_rep = float(obs.std()), rp.std(axis=1)
                tests.append({"stat": stat, "observed": t_obs,
                              "replicated": float(np.median(t_rep)),
                              "p": float(np.mean(t_rep >= t_obs))})
    return [{"outcome": None, "panels": panels, "tests": tests, "shown": int(min(S, PPC_SHOWN)),
             "design": True}]


def _ecdfs(obs: np.ndarray, rep: np.ndarray) -> dict:
    """Observed and (the first 60) replicated ECDFs, through at most 2000 ranks."""
    if obs.size == 0:
        return {"empty": True}
    ranks_ = thin_index(obs.size, ECDF_POINTS)
    y = (np.arange(1, obs.size + 1) / obs.size)[ranks_]
    return {"empty": False, "y": y, "observed": np.sort(obs)[ranks_],
            "replicates": np.sort(rep[:PPC_SHOWN], axis=1)[:, ranks_]}


def effect_sources(idata, data) -> list[dict]:
    """The group effects a posterior holds, one entry per factor.

    Each: the variable (``group_effect`` of the top factor; a formula's latent forms:
    ``u_<factor>``), its factor's name and row codes, and the draws or (many groups)
    :mod:`models.effects`' moments.
    """
    from varcomp.models.effects import SUMMARY_GROUP
    from varcomp.models.forms import family_of

    post = idata.posterior
    # the rows' codes matter only with a design (partial residuals); statistics-only data
    # (a file reduced while reading) have none
    names = [("group_effect", data.group_name, getattr(data, "codes", None))]
    if family_of(data).design:
        from varcomp.models.forms.mixed import effect_names

        names += [(var, f.name, f.codes)
                  for (var, _), f in zip(effect_names(data), data.design.factors, strict=True)]
    out, seen = [], set()
    for var, factor, codes in names:
        if var in seen:
            continue
        seen.add(var)
        if var in post and "coef" in post[var].dims:  # random slopes: a panel per coefficient
            out += [{"var": f"{var}[{c}]", "factor": f"{factor}|{c}", "codes": codes,
                     "draws": post[var].sel(coef=c, drop=True), "coef": c}
                    for c in post[var]["coef"].values]
        elif var in post:
            out.append({"var": var, "factor": factor, "codes": codes, "draws": post[var]})
        elif var == "group_effect" and SUMMARY_GROUP in idata.groups():
            out.append({"var": var, "factor": factor, "codes": codes,
                        "moments": idata[SUMMARY_GROUP]})
    return out


def _observed_effects(post, data, sources: list[dict], k: int, o) -> list:
    """Per source, the raw means of its levels minus what the model explains otherwise.

    One-way: the cluster means minus E[mu]. With a design: the means of y - X E[beta] minus the
    other factors' posterior mean effects (partial residuals), so cross-to-dot is the shrinkage.
    """
    from varcomp.models.forms import family_of

    if not family_of(data).design:
        offset = data.stats.mean[:, k] - float(flat(pick(post["mu"], o)).mean())
        return [offset if s["var"] == "group_effect" else None for s in sources]
    design = data.design
    if design.X is None:  # statistics only: no rows for partial residuals
        return [None] * len(sources)
    beta = post["beta"].mean(("chain", "draw")).values
    resid = data.y[:, k] - design.X @ beta
    means = [np.asarray(s["draws"].mean(("chain", "draw")).values if "draws" in s
                        else s["moments"]["mean"].values, dtype=np.float64) for s in sources]
    out = []
    for i, s in enumerate(sources):
        if "coef" in s:  # a coefficient's effects: no raw mean to set beside them
            out.append(None)
            continue
        r = resid - sum((m[sources[j]["codes"]] for j, m in enumerate(means) if j != i), 0.0)
        counts = np.bincount(s["codes"], minlength=means[i].size)
        ok = counts.size == means[i].size
        out.append(np.bincount(s["codes"], weights=r, minlength=counts.size) / counts
                   if ok else None)
    return out


def caterpillars(idata, data, outcomes: list) -> list[dict]:
    """Group effects of each factor the posterior holds, one caterpillar each.

    Posterior mean and 94% interval per level, and the raw means (:func:`_observed_effects`)
    as crosses.

    From the draws (``az.hdi``) or, for very many groups, from the Rao-Blackwellised posterior
    mean and sd of :mod:`models.effects` (mean -/+ 1.88 sd).
    """
    post = idata.posterior
    sources = effect_sources(idata, data)
    z = float(NormalDist().inv_cdf(0.5 + HDI_PROB / 2))
    views = [{"factor": s["factor"], "var": s["var"], "draws": "draws" in s, "z": z,
              "panels": []} for s in sources]
    for k, o in enumerate(outcomes):
        observed = _observed_effects(post, data, sources, k, o) if sources else []
        for s, view, obs in zip(sources, views, observed, strict=True):
            if "draws" in s:
                da = pick(s["draws"], o)
                dim = next(d for d in da.dims if d not in ("chain", "draw"))
                da = da.transpose("chain", "draw", dim)
                mean = da.mean(("chain", "draw")).values
                ends = hdi_array(da)
                lo, hi = ends[:, 0], ends[:, 1]
            else:
                dim = "group"
                mean = np.asarray(pick(s["moments"]["mean"], o).values, dtype=np.float64)
                sd = np.asarray(pick(s["moments"]["sd"], o).values, dtype=np.float64)
                lo, hi = mean - z * sd, mean + z * sd
            labels = [str(g) for g in (s["draws"] if "draws" in s else s["moments"])[dim].values]
            G = len(labels)
            order = np.argsort(mean)
            y = np.arange(G)
            if G > CATERPILLAR_MAX:  # every k-th group in rank order, the extremes included
                keep = thin_index(G, CATERPILLAR_MAX)
                order, y = order[keep], y[keep]
            view.update(groups=G, thinned=G > CATERPILLAR_MAX)
            view["panels"].append({
                "outcome": o, "y": y, "mean": mean[order], "lo": lo[order], "hi": hi[order],
                "observed": None if obs is None or obs.size != G else obs[order],
                "labels": [labels[j] for j in order]})
    return views


