"""The HTML report of a fit (report.html): one self-contained page, statistics apart from layout.

:mod:`~analyses.report.compute` computes the page's numbers (plain data; the predictive checks
and group effects in :mod:`~analyses.report.effects`, the mixed families' sections in
:mod:`~analyses.report.mixed`; :mod:`~analyses.report.page` assembles them into the page's
data), :mod:`~analyses.report.figures` draws the figures (matplotlib, base64 PNG) and
:mod:`~analyses.report.render` fills the jinja2 templates in ``templates/`` (autoescaped, with
``static/style.css`` inlined). What is shown is asked of the family's summary variables and the
posterior, never of the kind of data. Sections: with ``render_report``'s ``reliability`` tables
(``varcomp reliability``), the rater ICCs, G and D studies; at a glance; the data (cluster
sizes, singletons, dropped rows, warnings; a formula's design: fixed-effect columns, levels per
factor, nested or crossed; the one-way families' ANOVA); ML/REML estimates (every parameter,
criterion, boundary per factor); with several fits, the parameterisation comparison (timings,
ESS/s, divergences, posterior agreement, overlaid ICC or VPC posteriors, which forms to trust);
then per fit a diagnostics banner and the parameter table of summary.json; with fixed effects a
table and coefficient plot (REML/ML beside); one factor: the ICC posterior (HDI, ML/REML, P(ICC
< 0.01) near the boundary), design effect and reliability of cluster means and, with covariates,
adjusted/unadjusted ICC and marginal/conditional R^2; several factors: the variance components
(sd, variance, VPC, REML beside) with a VPC figure, the correlation of rows sharing levels and,
for part x operator with interaction, the gauge R&R reading; rank plots of scalar elements, the
energy plot, tau-sigma pair plots with divergences, a posterior predictive check, caterpillar
plots of every factor's group effects the posterior holds, and the multivariate family's
matrices (V, Sigma and both correlations).
"""

from __future__ import annotations

from varcomp.analyses.report.figures import icc_figure
from varcomp.analyses.report.render import render_report, write_report

__all__ = ["icc_figure", "render_report", "write_report"]
