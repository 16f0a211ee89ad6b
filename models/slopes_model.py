r"""The random-slopes family's prior and its per-draw numpy: effects, densities, shares, estimates.

.. math::
    y_l = X_l\beta + Z_l b_l + e_l,\qquad b_l \sim N_q(0, V),\qquad e_l \sim N(0, \sigma^2 I),
    \qquad V = \mathrm{diag}(\tau)\, R\, \mathrm{diag}(\tau)

for one grouping factor whose terms (``(1 + x|g)``, ``(x||g)``, ...) give the q coefficient
columns Z. R is block diagonal: one block per term (a correlated term's block has an LKJ(eta)
prior; the uncorrelated ``||`` terms are blocks of one). :class:`SlopesPriors` is the prior
every form uses; the PyMC builders are :mod:`models.forms.slopes`.

Decisions:

- Priors: beta and sigma as the random-intercept regression (:class:`models.lmm.LmmPriors`);
  the sd of each coefficient tau_c ~ HalfStudentT(3, sd(y) / sd(x_c)) (sd(y) for the
  intercept: the betas' autoscaling, so a slope's sd is a few sd(y) per sd(x) at most a
  priori); each correlated block LKJ(eta = 2): for q = 2 a Beta(2, 2) on (rho + 1) / 2, zero at
  rho = +-1, which keeps the sampler off singular V without pulling rho = 0.8 in.
- The correlation is parameterised by its canonical partial correlations (CPCs; ``cpc``, or
  ``cpc_i`` per correlated term, holds (CPC + 1) / 2, Beta distributed) and the sds are their
  own HalfStudentT variables (nutpie 0.16.8 cannot initialise ``LKJCholeskyCov`` with a
  HalfStudentT ``sd_dist``); ``rho`` is a Deterministic. Not PyMC's ``LKJCorr``: its graph takes
  det(R) and Cholesky(R), whose gradients invert R, singular near rho = +-1 (nutpie's C backend
  crashed on a LinAlgError in warm-up), its interval transform leaves non-positive-definite
  points for q >= 3, and PyMC 5.28 adds its normalising constant where it should subtract it.
  The CPC density is exact, constants included; the compiled route
  (:mod:`models.compiled.slopes`) samples the same coordinates (its z_c = atanh(CPC)).
- Group effects of the integrated forms: an exact draw from b_l | y, beta, V, sigma per
  posterior draw, in lme4's spherical coordinates (b_l = Lambda u_l, Lambda = chol(V) / sigma,
  u_l | y ~ N(A_l^-1 Lambda' Z_l' r_l, sigma^2 A_l^-1), A_l = Lambda' Z_l'Z_l Lambda + I).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from varcomp.models import shares
from varcomp.models.errors import DataError
from varcomp.models.lmm import LmmPriors
from varcomp.models.priors import ScalePrior, check_relative_scale, lkj_log_norm
from varcomp.models.terms import INTERCEPT

__all__ = ["DEFAULT_ETA", "HEADLINE", "ICC_KEY", "SlopesPriors",
           "add_slope_effects", "curve_table", "derive", "estimates", "layout",
           "parse_slopes_priors", "slopes_log_prior", "slopes_loglik", "stats_of"]

DEFAULT_ETA = 2.0
"""LKJ shape of each correlated term's correlation matrix (see the module)."""

HEADLINE = "vpc_mean_variance"
"""The headline share's name: Johnson's (2014) mean-variance VPC. Decision: one number that does
not depend on a chosen x (the ICC curve shows how the share moves with x)."""

ICC_KEY = "icc_curve"
"""summary.json key of the ICC curve's table (x, mean, 94% interval at min, quartiles, max)."""

CURVE_POINTS = 41
"""Grid points of the ICC curve over the observed range of the slope column."""


@dataclass(frozen=True)
class Layout:
    """One factor's random-effects columns: Z (N, q), names, and the blocks of correlated terms."""

    group: str
    columns: tuple[str, ...]
    blocks: tuple[tuple[int, ...], ...]
    Z: np.ndarray

    @property
    def q(self) -> int:
        """Number of random-effects coefficients."""
        return len(self.columns)

    @property
    def coords(self) -> list[str]:
        """The ``factor`` dim's labels: ``Subject|Intercept``, ``Subject|Days``."""
        return [f"{self.group}|{c}" for c in self.columns]

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """The correlated pairs (i < j in one block), LKJCorr's order block by block."""
        out = []
        for b in self.blocks:
            out += [(b[i], b[j]) for i, j in zip(*np.triu_indices(len(b), 1), strict=True)]
        return out

    @property
    def pair_coords(self) -> list[str]:
        """The ``pair`` dim's labels: ``Subject|Intercept,Days``."""
        return [f"{self.group}|{self.columns[i]},{self.columns[j]}" for i, j in self.pairs]

    @property
    def slope_column(self) -> int | None:
        """The one slope column the ICC curve runs over (None: several or none)."""
        slopes = [j for j, c in enumerate(self.columns) if c != INTERCEPT]
        return slopes[0] if len(slopes) == 1 else None


def layout(data) -> Layout:
    """The random-effects columns of ``data``'s design (one factor; a column once)."""
    terms = data.design.random
    columns, blocks, values = [], [], []
    for t in terms:
        dup = [c for c in t.columns if c in columns]
        if dup:
            raise DataError(f"the coefficient {dup[0]!r} of (..|{t.factor.name}) appears in two "
                            f"random-effects terms: write it in one term")
        blocks.append(tuple(range(len(columns), len(columns) + len(t.columns))))
        columns += list(t.columns)
        values.append(np.asarray(t.values, dtype=np.float64))
    return Layout(terms[0].factor.name, tuple(columns), tuple(blocks), np.hstack(values))


def stats_of(data):
    """The per-cluster cross-products (:func:`models.slopes_stats.slope_stats`) of ``data``."""
    from varcomp.models.slopes_stats import slope_stats

    lay = layout(data)
    return slope_stats(data.y[:, 0], data.design.X, lay.Z, data.codes, len(data.groups))


@dataclass(frozen=True)
class SlopesPriors:
    """The prior every form of the slopes family uses (see the module)."""

    fixed: LmmPriors
    layout: Layout
    tau: tuple[ScalePrior, ...]
    eta: float = DEFAULT_ETA

    @property
    def scale(self) -> float:
        """sd(y): the scale the sampler's coordinates are standardised by."""
        return self.fixed.scale

    @classmethod
    def default(cls, data) -> SlopesPriors:
        """Sd of coefficient c ~ HalfStudentT(3, sd(y) / sd(x_c)); LKJ(2); beta, sigma as lmm."""
        fixed = LmmPriors.default(data)
        lay = layout(data)
        taus = []
        for j, c in enumerate(lay.columns):
            s = 1.0 if c == INTERCEPT else float(np.std(lay.Z[:, j], ddof=1))
            if not s > 0:
                raise DataError(f"the random slope {c!r} is constant over the rows: its slope "
                                f"is not identifiable beside the intercept; drop it")
            taus.append(ScalePrior("halfstudentt", fixed.scale / s))
        return cls(fixed=fixed, layout=lay, tau=tuple(taus))

    # ------------------------------------------------------------------ numpy
    def corr(self, rho) -> np.ndarray:
        """R (..., q, q) from the correlations (..., pairs)."""
        rho = np.asarray(rho, dtype=np.float64)
        q = self.layout.q
        R = np.broadcast_to(np.eye(q), (*rho.shape[:-1], q, q)).copy()
        for p, (i, j) in enumerate(self.layout.pairs):
            R[..., i, j] = R[..., j, i] = rho[..., p]
        return R

    def V(self, tau, rho) -> np.ndarray:
        """V (..., q, q) = diag(tau) R diag(tau)."""
        tau = np.asarray(tau, dtype=np.float64)
        return tau[..., :, None] * self.corr(rho) * tau[..., None, :]

    def cpc(self, rho) -> tuple[dict[str, np.ndarray], float]:
        """The PyMC forms' correlation variables at ``rho`` (one point, LKJCorr's pair order).

        Returns ``({"cpc" or "cpc_i": u}, log|d rho / d u|)``: u = (w + 1) / 2 of each block's
        CPCs w_im (i > m, row by row; w_im = L_im / prod_{m' < m} sqrt(1 - w_im'^2), L =
        chol(R)), and the log Jacobian sum_{i>m} (n - m - 2) / 2 log(1 - w_im^2) + P log 2
        (the LKJ density of rho is the u's Beta density minus it).
        """
        R = self.corr(np.asarray(rho, dtype=np.float64))
        blocks = [b for b in self.layout.blocks if len(b) > 1]
        out, log_jac = {}, 0.0
        for i, b in enumerate(blocks):
            n = len(b)
            L = np.linalg.cholesky(R[np.ix_(b, b)])
            u = []
            for r in range(1, n):
                rest = 1.0
                for m in range(r):
                    w = L[r, m] / np.sqrt(rest)
                    rest -= L[r, m] ** 2
                    u.append((w + 1.0) / 2.0)
                    log_jac += 0.5 * (n - m - 2) * np.log1p(-w * w) + np.log(2.0)
            out["cpc" if len(blocks) == 1 else f"cpc_{i}"] = np.array(u)
        return out, float(log_jac)

    def logpdf(self, beta, tau, rho, sigma):
        """The prior's log density (the correct LKJ constant), vectorised over leading axes."""
        sigma = np.asarray(sigma, dtype=np.float64)
        tau = np.asarray(tau, dtype=np.float64)
        out = self.fixed.logpdf(beta, np.ones((*sigma.shape, len(self.fixed.tau))), sigma)
        out = out - sum(p.logpdf(np.ones(sigma.shape)) for p in self.fixed.tau)  # unused tau
        for i, p in enumerate(self.tau):
            out = out + p.logpdf(tau[..., i])
        R = self.corr(rho)
        for b in self.layout.blocks:
            if len(b) > 1:
                sub = R[..., list(b), :][..., list(b)]
                out = out + (self.eta - 1.0) * np.linalg.slogdet(sub)[1] - lkj_log_norm(
                    len(b), self.eta)
        return out

    def describe(self) -> dict[str, str]:
        """Each parameter's prior as text (for reports)."""
        out = {k: v for k, v in self.fixed.describe().items() if not k.startswith("tau")}
        for c, p in zip(self.layout.coords, self.tau, strict=True):
            out[f"tau[{c}]"] = p.describe()
        if self.layout.pairs:
            out["rho"] = f"LKJ(eta={self.eta:g}) per correlated term"
        return out

    # ------------------------------------------------------------------ PyMC
    def create(self):
        """Create the parameters in the current PyMC model; returns (beta, tau, chol_V, sigma).

        ``tau`` (dim ``factor``: ``Subject|Intercept``, ...), ``cpc`` (or ``cpc_i``: the CPCs,
        :meth:`_corr_chol_pt`) and the Deterministic ``rho`` (dim ``pair``) if any term is
        correlated, ``sigma``, ``beta`` (dim ``term``); chol_V is the lower Cholesky factor of V
        (a tensor).
        """
        import pymc as pm
        import pytensor.tensor as pt

        from varcomp.models.transforms import ScaledLog

        beta = self.fixed.create_beta()
        if len({(p.family, p.nu) for p in self.tau}) != 1:
            raise DataError("the tau priors of the coefficients must share one family (and nu)")
        scales = np.array([p.scale for p in self.tau])
        tau = self.tau[0].pymc("tau", scale=scales, dims="factor")
        sigma = self.fixed.sigma.pymc("sigma", default_transform=ScaledLog(self.scale))
        lay = self.layout
        corr_blocks = [b for b in lay.blocks if len(b) > 1]
        chol = pt.zeros((lay.q, lay.q))
        for b in lay.blocks:
            if len(b) == 1:
                chol = pt.set_subtensor(chol[b[0], b[0]], tau[b[0]])
        rhos = []
        for i, b in enumerate(corr_blocks):
            L = self._corr_chol_pt("cpc" if len(corr_blocks) == 1 else f"cpc_{i}", len(b))
            rhos.append(pt.dot(L, L.T)[np.triu_indices(len(b), 1)])
            chol = pt.set_subtensor(chol[np.ix_(b, b)], tau[list(b)][:, None] * L)
        if rhos:
            pm.Deterministic("rho", pt.concatenate(rhos), dims="pair")
        return beta, tau, chol, sigma

    def _corr_chol_pt(self, name: str, n: int):
        """The LKJ(eta) correlation's Cholesky factor (n, n) from its CPCs (a PyMC variable).

        ``name`` holds u = (w + 1) / 2 of the CPCs w_im (i > m, row by row), independent
        u_im ~ Beta(b_m, b_m) with b_m = eta - 1 + (n - m) / 2: exactly LKJ(eta) on R
        (Lewandowski et al. 2009). L_im = w_im prod_{m' < m} sqrt(1 - w_im'^2), L_ii the rest,
        1 - w^2 = 4 u (1 - u): no Cholesky, determinant or inverse of R in the graph.
        """
        import pymc as pm
        import pytensor.tensor as pt

        rows, cols = np.tril_indices(n, -1)
        b = self.eta - 1.0 + (n - cols) / 2.0
        u = pm.Beta(name, alpha=b, beta=b)
        L = pt.eye(n)
        p = 0
        for i in range(1, n):
            rest = 1.0
            for m in range(i):
                L = pt.set_subtensor(L[i, m], (2.0 * u[p] - 1.0) * pt.sqrt(rest))
                rest = rest * 4.0 * u[p] * (1.0 - u[p])
                p += 1
            L = pt.set_subtensor(L[i, i], pt.sqrt(rest))
        return L


def parse_slopes_priors(data, specs) -> SlopesPriors:
    """Apply ``--prior`` overrides through the one grammar (:mod:`models.prior_grammar`).

    The regression's names (``intercept``, ``beta[x]``, ``sigma``) and ``tau=FAMILY:SCALE``
    (every coefficient) or ``tau[Subject|Days]=FAMILY:SCALE`` (one, by its output label). The
    LKJ shape is not a ``--prior``: it stays :data:`DEFAULT_ETA`.
    """
    from varcomp.models.lmm import parse_lmm_priors
    from varcomp.models.prior_grammar import PriorSpec, parse_prior

    priors = SlopesPriors.default(data)
    coords = priors.layout.coords
    rest, taus = [], list(priors.tau)
    for text in specs or []:
        spec: PriorSpec = parse_prior(text, ["intercept", "beta", "tau", "sigma"])
        if spec.name != "tau":
            rest.append(text)
            continue
        if not isinstance(spec.prior, ScalePrior):
            raise DataError(f"bad prior '{text}': tau takes a scale prior (halfnormal, "
                            f"halfstudentt, halfcauchy, exponential)")
        if spec.label is not None and spec.label not in coords:
            raise DataError(f"bad prior '{text}': no coefficient {spec.label!r}; tau's labels: "
                            f"{coords}")
        taus = [spec.prior if spec.label in (None, c) else old
                for c, old in zip(coords, taus, strict=True)]
    fixed = parse_lmm_priors(priors.fixed, rest)
    for p in taus:
        check_relative_scale(p.scale, priors.scale * 1e3, "tau scale")
    if len({(p.family, p.nu) for p in taus}) != 1:
        raise DataError("the tau priors of the coefficients must share one family (and nu): "
                        "give tau=FAMILY:SCALE for all, then tau[g|c]=FAMILY:SCALE")
    return replace(priors, fixed=fixed, tau=tuple(taus))


# ---------------------------------------------------------------------- per draw
def _draws(post, priors: SlopesPriors):
    S = post.sizes["chain"] * post.sizes["draw"]
    beta = post["beta"].values.reshape(S, -1)
    tau = post["tau"].values.reshape(S, -1)
    rho = post["rho"].values.reshape(S, -1) if "rho" in post else np.zeros((S, 0))
    sigma = post["sigma"].values.reshape(S)
    return beta, tau, rho, sigma, priors.V(tau, rho)


def slopes_loglik(data, post, likelihood=None) -> np.ndarray:
    """(S, L): each cluster's log density, its effects integrated out (Woodbury, exact).

    ``likelihood`` (the Family hook's argument) is Gaussian for this family: unused.
    """
    from varcomp.models.slopes_estimate import cluster_log_density

    st = stats_of(data)
    beta, _, _, sigma, V = _draws(post, SlopesPriors.default(data))
    return np.stack([cluster_log_density(st, beta[s], V[s], sigma[s])
                     for s in range(len(sigma))])


def slopes_log_prior(data, post, priors) -> np.ndarray:
    """(S,): the log prior per draw (power-scaling)."""
    beta, tau, rho, sigma, _ = _draws(post, priors)
    return np.asarray(priors.logpdf(beta, tau, rho, sigma))


def add_slope_effects(idata, data, seed: int | None = 0) -> None:
    """``b`` (chain, draw, group, coef): one exact draw of each cluster's effects per draw."""
    import xarray as xr

    from varcomp.models.effects import MAX_DRAW_VALUES

    post = idata.posterior
    lay = layout(data)
    S = post.sizes["chain"] * post.sizes["draw"]
    if "b" in post or S * len(data.groups) * lay.q > MAX_DRAW_VALUES:
        return
    st = stats_of(data)
    beta, _, _, sigma, V = _draws(post, SlopesPriors.default(data))
    rng = np.random.default_rng(seed)
    q = lay.q
    out = np.empty((S, st.L, q))
    step = max(1, 2**20 // (st.L * q * q))  # draws per batch: ~8 MB per (draws, L, q, q) array
    for a in range(0, S, step):
        sl = slice(a, min(a + step, S))
        lam = np.linalg.cholesky(V[sl] + 1e-300 * np.eye(q)) / sigma[sl, None, None]
        A = np.swapaxes(lam, -1, -2)[:, None] @ st.ZtZ @ lam[:, None] + np.eye(q)
        C = np.linalg.cholesky(A)
        r = st.Zty - np.einsum("lqk,sk->slq", st.ZtX, beta[sl])  # Z_l' r_l per draw
        mean = np.linalg.solve(A, np.einsum("sji,slj->sli", lam, r)[..., None])[..., 0]
        e = rng.standard_normal((lam.shape[0], st.L, q, 1))  # the stream draw by draw
        u = mean + sigma[sl, None, None] * np.linalg.solve(np.swapaxes(C, -1, -2), e)[..., 0]
        out[sl] = np.einsum("slj,sij->sli", u, lam)
    post["b"] = xr.DataArray(out.reshape(post.sizes["chain"], post.sizes["draw"], st.L, lay.q),
                             dims=("chain", "draw", "group", "coef"),
                             coords={"group": [str(g) for g in data.groups],
                                     "coef": list(lay.columns)})


def curve_grid(data) -> tuple[np.ndarray, np.ndarray] | None:
    """(x grid, z rows (G, q)) of the ICC curve over the slope column's observed range."""
    lay = layout(data)
    j = lay.slope_column
    if j is None:
        return None
    x = np.linspace(lay.Z[:, j].min(), lay.Z[:, j].max(), CURVE_POINTS)
    z = np.ones((x.size, lay.q))
    z[:, j] = x
    return x, z


def derive(idata, data, likelihood=None) -> None:
    """Per draw: ``vpc_mean_variance`` (Johnson's VPC, the headline), ``icc_curve`` (dim ``x``).

    ``likelihood`` (the Family hook's argument) is Gaussian for this family: unused.

    ``vpc_mean_variance`` = mean over rows of z_i'Vz_i / (that + sigma^2); ``icc_curve`` =
    z(x)'Vz(x) / (z(x)'Vz(x) + sigma^2) over the slope column's observed range (one slope
    column only).
    """
    import xarray as xr

    post = idata.posterior
    shape = (post.sizes["chain"], post.sizes["draw"])
    _, _, _, sigma, V = _draws(post, SlopesPriors.default(data))
    s2 = sigma**2
    lay = layout(data)
    post[HEADLINE] = xr.DataArray(
        np.asarray(shares.vpc_mean_variance(V, s2, lay.Z)).reshape(shape), dims=("chain", "draw"))
    grid = curve_grid(data)
    if grid is not None:
        x, z = grid
        curve = np.asarray(shares.icc_curve(V, s2, z)).reshape(*shape, x.size)
        post["icc_curve"] = xr.DataArray(curve, dims=("chain", "draw", "x"), coords={"x": x})


def curve_table(idata, data) -> dict:
    """``{"icc_curve": rows}``: the ICC curve at the slope column's min, quartiles and max.

    Each row: ``x``, ``mean``, ``lo94``, ``hi94`` (the 3% and 97% quantiles of the draws'
    tau^2(x) / (tau^2(x) + sigma^2)). Empty where there is no single slope column.
    """
    post = idata.posterior
    grid = curve_grid(data)
    if grid is None or "icc_curve" not in post:
        return {}
    lay = layout(data)
    xs = np.quantile(lay.Z[:, lay.slope_column], [0.0, 0.25, 0.5, 0.75, 1.0])
    _, _, _, sigma, V = _draws(post, SlopesPriors.default(data))
    z = np.ones((xs.size, lay.q))
    z[:, lay.slope_column] = xs
    G = np.asarray(shares.icc_curve(V, sigma**2, z))
    lo, hi = np.quantile(G, [0.03, 0.97], axis=0)
    return {ICC_KEY: [{"x": float(x), "mean": float(g), "lo94": float(a), "hi94": float(b)}
                      for x, g, a, b in zip(xs, G.mean(axis=0), lo, hi, strict=True)]}


@dataclass(frozen=True)
class SlopesFit:
    """An ML/REML fit (:class:`models.slopes_estimate.SlopesEstimate`) in summary.json's terms."""

    fit: object
    layout: Layout
    Z: np.ndarray = None

    def as_dict(self) -> dict:
        """Named sds and correlations, sigma, beta, the criterion, boundary flags, the VPC."""
        f = self.fit
        d = f.as_dict()
        beta = {n: d.pop(n) for n in f.fixed_names}
        s2 = f.sigma**2
        return {**d, "beta": beta, "criterion": f.criterion, "boundary": f.boundary,
                "singular": f.singular,
                HEADLINE: float(shares.vpc_mean_variance(f.V, s2, self.layout.Z))}

    @property
    def boundary(self) -> bool:
        """Whether an sd is at 0 or a correlation at +-1."""
        return any(self.fit.boundary.values())


def estimates(data) -> dict[str, SlopesFit]:
    """REML and ML (lme4's criteria, :func:`models.slopes_estimate.fit_slopes`).

    Several correlated blocks are not covered by lme4's Lambda here (one term, or all ``||``).
    """
    from varcomp.models.slopes_estimate import fit_slopes

    lay = layout(data)
    correlated = len(lay.blocks) == 1 and lay.q > 1
    if not correlated and any(len(b) > 1 for b in lay.blocks):
        return {}
    st = stats_of(data)
    kw = {"correlated": correlated, "group": lay.group, "coefficients": lay.columns,
          "fixed_names": data.design.terms}
    return {m: SlopesFit(fit_slopes(st, method=m, **kw), lay) for m in ("reml", "ml")}
