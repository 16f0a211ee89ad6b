"""PyTensor Ops of the GLMM cluster quadrature: ``pm.Potential("loglik", op(eta, tau))``.

Two Ops, both returning the total log marginal density (a scalar) of a one-factor random-intercept
GLMM with the rows' constants included, and both differentiable through a companion Op built from
``models.quadrature``'s exact gradient (so NUTS gets the gradient of the value it is given):

- ``SufficientLogpOp(stats, family, link, K)``: inputs eta per cluster (L,) and tau (scalar);
  ``stats`` from ``quadrature.cluster_stats`` (the data, held as constants).
- ``RowLogpOp(y, trials, codes, family, link, K)``: inputs eta per row (N,) and tau (scalar).

``K`` is the quadrature rule (``None``: the default trapezoid; an integer: Gauss-Hermite).
Evaluation is numpy on the host (``perform``), one call per logp/gradient evaluation.
"""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op

from .quadrature import DEFAULT_K, cluster_logp, sufficient_logp

__all__ = ["RowLogpOp", "RowsLogpOp", "StatsLogpOp", "SufficientLogpOp"]


class _LogpGrad(Op):
    """(eta, tau) -> (d total / d eta, d total / d tau) of its parent Op."""

    def __init__(self, parent):
        self.parent = parent

    def make_node(self, eta, tau):
        eta, tau = pt.as_tensor_variable(eta), pt.as_tensor_variable(tau)
        return Apply(self, [eta, tau], [eta.type(), tau.type()])

    def perform(self, node, inputs, outputs):
        _, d_eta, d_tau = self.parent.evaluate(inputs[0], inputs[1], grad=True)
        outputs[0][0] = np.asarray(d_eta, dtype=node.outputs[0].dtype)
        outputs[1][0] = np.asarray(d_tau, dtype=node.outputs[1].dtype)


class _LogpOp(Op):
    """Base: (eta vector, tau scalar) -> total log density; ``evaluate`` is the numpy side."""

    def evaluate(self, eta, tau, grad):  # pragma: no cover - overridden
        raise NotImplementedError

    def make_node(self, eta, tau):
        eta = pt.as_tensor_variable(eta).astype("float64")
        tau = pt.as_tensor_variable(tau).astype("float64")
        if eta.ndim != 1 or tau.ndim != 0:
            raise TypeError("eta must be a vector and tau a scalar")
        return Apply(self, [eta, tau], [pt.dscalar()])

    def perform(self, node, inputs, outputs):
        total, _, _ = self.evaluate(inputs[0], inputs[1], grad=False)
        outputs[0][0] = np.asarray(total, dtype="float64")

    def grad(self, inputs, output_grads):
        d_eta, d_tau = _LogpGrad(self)(*inputs)
        g = output_grads[0]
        return [g * d_eta, g * d_tau]


class SufficientLogpOp(_LogpOp):
    """Total log density from cluster sufficient statistics; inputs eta per cluster and tau."""

    def __init__(self, stats, family: str, link: str, K: int | None = DEFAULT_K):
        self.stats, self.family, self.link, self.K = stats, family, link, K

    def evaluate(self, eta, tau, grad):
        """(total, d total / d eta, d total / d tau); the last two None unless ``grad``."""
        total, d_tau, d_eta = sufficient_logp(
            self.stats, eta, float(tau), self.family, self.link, self.K, grad
        )
        return total, d_eta, d_tau


class RowLogpOp(_LogpOp):
    """Total log density from the rows; inputs eta per row and tau."""

    def __init__(self, y, trials, codes, family: str, link: str, K: int | None = DEFAULT_K):
        self.y = np.asarray(y, dtype=float)
        self.trials = None if trials is None else np.asarray(trials, dtype=float)
        self.codes = np.asarray(codes, dtype=np.intp)
        self.n_clusters = int(self.codes.max()) + 1
        self.family, self.link, self.K = family, link, K

    def evaluate(self, eta, tau, grad):
        """(total, d total / d eta, d total / d tau); the last two None unless ``grad``."""
        r = cluster_logp(
            self.y,
            self.trials,
            eta,
            self.codes,
            float(tau),
            self.family,
            self.link,
            self.K,
            n_clusters=self.n_clusters,
            grad=grad,
        )
        total = float(r.logp.sum())
        return (total, r.d_eta, float(r.d_tau.sum())) if grad else (total, None, None)


class _DataLogpOp(Op):
    """Base of the data-carrying Ops: inputs ``(eta, tau, *data)`` -> total log density.

    The data arrive as inputs (``pm.Data`` containers), so one compiled model serves every data
    set of its design (``pm.set_data``); their gradient is undefined (never asked for: they are
    not parameters).
    """

    n_data = 0
    _last = None  # (inputs' bytes, (total, d_eta, d_tau)): the value's call serves the gradient's

    def evaluate(self, eta, tau, data, grad):  # pragma: no cover - overridden
        raise NotImplementedError

    def cached(self, inputs):
        """(total, d_eta, d_tau) at ``inputs``, computed once for a value and its gradient.

        The sampler asks for both at each point; the gradient costs little more than the value.
        """
        key = tuple(np.asarray(x).tobytes() for x in inputs)
        if self._last is None or self._last[0] != key:
            from varcomp.models.compiled.glmm import TAU_MAX, TAU_MIN

            eta, tau = np.asarray(inputs[0]), float(inputs[1])
            if TAU_MIN < tau < TAU_MAX and np.isfinite(eta).all():
                value = self.evaluate(inputs[0], inputs[1], inputs[2:], grad=True)
            else:  # a rejected point, as on the compiled route (its grid would not fit memory)
                value = (-np.inf, np.zeros_like(eta, dtype=np.float64), 0.0)
            self._last = (key, value)
        return self._last[1]

    def make_node(self, eta, tau, *data):
        eta = pt.as_tensor_variable(eta).astype("float64")
        tau = pt.as_tensor_variable(tau).astype("float64")
        if eta.ndim != 1 or tau.ndim != 0 or len(data) != self.n_data:
            raise TypeError(f"inputs: eta (vector), tau (scalar) and {self.n_data} data arrays")
        data = [pt.as_tensor_variable(d) for d in data]
        return Apply(self, [eta, tau, *data], [pt.dscalar()])

    def perform(self, node, inputs, outputs):
        total, _, _ = self.cached(inputs)
        outputs[0][0] = np.asarray(total, dtype="float64")

    def grad(self, inputs, output_grads):
        from pytensor.gradient import grad_undefined

        d_eta, d_tau = _DataLogpGrad(self)(*inputs)
        g = output_grads[0]
        rest = [grad_undefined(self, i, x, "data are not parameters")
                for i, x in enumerate(inputs[2:], start=2)]
        return [g * d_eta, g * d_tau, *rest]


class _DataLogpGrad(Op):
    """(eta, tau, *data) -> (d total / d eta, d total / d tau) of its parent Op."""

    def __init__(self, parent):
        self.parent = parent

    def make_node(self, eta, tau, *data):
        return Apply(self, [eta, tau, *data], [eta.type(), tau.type()])

    def perform(self, node, inputs, outputs):
        _, d_eta, d_tau = self.parent.cached(inputs)
        outputs[0][0] = np.asarray(d_eta, dtype=node.outputs[0].dtype)
        outputs[1][0] = np.asarray(d_tau, dtype=node.outputs[1].dtype)


class StatsLogpOp(_DataLogpOp):
    """The ``sufficient`` form's Op: ``(eta, tau, trials, y, log_exposure, const, group)``.

    Per cluster: the first four data arrays are a :class:`models.quadrature.ClusterStats`'
    fields, ``group`` codes clusters with equal statistics and cluster-level covariates. The
    logit and log links with the default rule run the numba kernel
    (:func:`models.compiled.glmm_quadrature.grouped_logp`, one quadrature per group); the probit
    or an integer K the numpy rule.
    """

    n_data = 5

    def __init__(self, family: str, link: str, K: int | None = DEFAULT_K):
        self.family, self.link, self.K = family, link, K
        from .compiled.glmm_quadrature import LINK_CODE

        self.code = LINK_CODE.get((family, link)) if K is None else None

    def evaluate(self, eta, tau, data, grad):
        """(total, d total / d eta, d total / d tau); the last two None unless ``grad``."""
        from .quadrature import ClusterStats

        if self.code is not None:
            from .compiled.glmm_quadrature import grouped_logp

            trials, y, log_exposure, const, group = data
            total, d_eta, d_tau = grouped_logp(
                self.code, np.asarray(trials, dtype=float), np.asarray(y, dtype=float),
                np.asarray(eta, dtype=float) + log_exposure, np.asarray(group, dtype=np.int64),
                float(tau), grad)
            from .glm_density import density_for

            # the rows' constants: ClusterStats.const and the pooled row's own (log C(n, y))
            pooled = density_for(self.family, self.link).const(np.asarray(y, dtype=float),
                                                              np.asarray(trials, dtype=float))
            total = float(total + np.sum(const) + np.sum(pooled))
            return (total, d_eta, float(d_tau)) if grad else (total, None, None)
        stats = ClusterStats(*(np.asarray(d, dtype=float) for d in data[:4]))
        total, d_tau, d_eta = sufficient_logp(stats, eta, float(tau), self.family, self.link,
                                              self.K, grad)
        return total, d_eta, d_tau


class RowsLogpOp(_DataLogpOp):
    """The ``marginal`` form's Op: ``(eta per row, tau, y, trials, codes)``.

    The logit and log links with the default rule run the numba kernel
    (:func:`models.compiled.glmm_quadrature.rows_logp`); the probit or an integer K numpy.
    """

    n_data = 3

    def __init__(self, family: str, link: str, n_clusters: int, K: int | None = DEFAULT_K):
        self.family, self.link, self.n_clusters, self.K = family, link, int(n_clusters), K
        from .compiled.glmm_quadrature import LINK_CODE

        self.code = LINK_CODE.get((family, link)) if K is None else None

    _order = None  # (codes' bytes, rows ordered by cluster, each cluster's start)

    def _rows(self, codes):
        key = np.asarray(codes).tobytes()
        if self._order is None or self._order[0] != key:
            codes = np.asarray(codes, dtype=np.intp)
            starts = np.concatenate([[0], np.cumsum(np.bincount(codes,
                                                                minlength=self.n_clusters))])
            self._order = (key, np.argsort(codes, kind="stable").astype(np.int64),
                           starts.astype(np.int64))
        return self._order[1:]

    def evaluate(self, eta, tau, data, grad):
        """(total, d total / d eta, d total / d tau); the last two None unless ``grad``."""
        y, trials, codes = data
        if self.code is not None:
            from .compiled.glmm_quadrature import rows_logp
            from .glm_density import density_for

            y, trials = np.asarray(y, dtype=float), np.asarray(trials, dtype=float)
            total, d_eta, d_tau = rows_logp(self.code, trials, y, np.asarray(eta, dtype=float),
                                            *self._rows(codes), float(tau), grad)
            total = float(total + np.sum(density_for(self.family, self.link).const(y, trials)))
            return (total, d_eta, float(d_tau)) if grad else (total, None, None)
        r = cluster_logp(y, trials, eta, np.asarray(codes, dtype=np.intp), float(tau),
                         self.family, self.link, self.K, n_clusters=self.n_clusters, grad=grad)
        total = float(r.logp.sum())
        return (total, r.d_eta, float(r.d_tau.sum())) if grad else (total, None, None)
