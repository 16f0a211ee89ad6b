"""Random-effects terms: a grouping factor and the coefficient columns whose effects vary by it.

``(1|g)`` is the term (g, ("Intercept",)); lme4's ``(1 + x|g)`` and ``(x|g)`` are (g, ("Intercept",
"x")), correlated within g; ``(0 + x|g)`` is (g, ("x",)); ``(1 + x || g)`` is two uncorrelated terms
(g, ("Intercept",)) and (g, ("x",)). Inside the package a component's sd is indexed by (factor,
coefficient); :func:`sd_name` and :func:`corr_name` alone turn that pair into the names of the
output (summary.json, NetCDF, report).

Data layer: no model code, no numpy at module level.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["INTERCEPT", "Factor", "Term", "corr_name", "sd_coords", "sd_name"]

INTERCEPT = "Intercept"


@dataclass(frozen=True)
class Factor:
    """A grouping: its name as in the formula, row codes 0..m-1, level labels."""

    name: str
    codes: object  # (N,) int64, or None for a design of statistics only
    levels: object  # (m,) object

    @property
    def m(self) -> int:
        """Number of levels."""
        return int(self.levels.size)


@dataclass(frozen=True)
class Term:
    """A random-effects term: the grouping factor and its coefficient columns.

    ``columns`` is ``("Intercept",)`` for a random intercept; slope columns follow by name.
    ``values`` is the (N, len(columns)) matrix of those columns over the kept rows (ones for the
    intercept), or None where the design holds statistics only. Effects of the columns of one
    term are correlated; those of different terms on one factor are not.
    """

    factor: Factor
    columns: tuple[str, ...] = (INTERCEPT,)
    values: object = field(default=None, repr=False, compare=False)

    @property
    def slopes(self) -> tuple[str, ...]:
        """The coefficient columns other than the intercept."""
        return tuple(c for c in self.columns if c != INTERCEPT)

    @property
    def label(self) -> str:
        """The term as lme4 writes it: ``(1|g)``, ``(1 + x|g)``, ``(0 + x|g)``."""
        lhs = " + ".join(("1" if c == INTERCEPT else c) for c in self.columns)
        return f"({lhs if INTERCEPT in self.columns else '0 + ' + lhs}|{self.factor.name})"


def _has_slopes(terms, factor: str) -> bool:
    return any(t.factor.name == factor and t.slopes for t in terms)


def sd_coords(terms) -> list[str] | None:
    """The coordinate of each sd (the ``factor`` dim's labels), or None where tau is a scalar.

    One intercept-only term: None (``tau``). Intercept-only factors: their names (``batch``,
    ``batch:cask``). A factor with slopes: ``Subject|Intercept``, ``Subject|Days``.
    """
    terms = tuple(terms)
    if len(terms) == 1 and not terms[0].slopes:
        return None
    out = []
    for t in terms:
        for c in t.columns:
            out.append(f"{t.factor.name}|{c}" if _has_slopes(terms, t.factor.name)
                       else t.factor.name)
    return out


def sd_name(terms, factor: str, coefficient: str = INTERCEPT, var: str = "tau") -> str:
    """The output name of the sd of (factor, coefficient).

    ``tau`` (one intercept-only term), ``tau[batch]``, ``tau[Subject|Days]``.
    """
    terms = tuple(terms)
    if not any(t.factor.name == factor and coefficient in t.columns for t in terms):
        raise KeyError(f"no random-effects term has ({factor}, {coefficient})")
    if len(terms) == 1 and not terms[0].slopes:
        return var
    if _has_slopes(terms, factor):
        return f"{var}[{factor}|{coefficient}]"
    return f"{var}[{factor}]"


def corr_name(factor: str, first: str, second: str, var: str = "rho") -> str:
    """The output name of the correlation of two coefficients of one factor's term.

    ``rho[Subject|Intercept,Days]``.
    """
    return f"{var}[{factor}|{first},{second}]"
