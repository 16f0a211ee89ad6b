"""A formula is data: it is parsed and checked here before anything in it is evaluated.

``formulae`` evaluates a call such as ``pd.io.common.os.system('...')`` by looking its dotted name
up in the caller's namespace, so a formula could run any code. :func:`check` parses the formula
with ``formulae``'s own scanner and parser (the tree ``formulae`` would evaluate) and accepts only

- data columns (``x``, ``log.radon``, `` `a b` ``), numbers, and the formula operators
  ``~ + - : * / ** ( ) |`` where ``formulae`` gives them a meaning;
- the transforms in :data:`TRANSFORMS`: ``np.log``, ``np.log1p``, ``np.exp``, ``np.sqrt``,
  ``np.abs``, ``center``, ``scale``, ``standardize``, ``I(...)`` (and ``{...}``) with the
  arithmetic ``+ - * / **``, ``C(x)`` and ``C(x, Treatment(level))``, and ``offset(...)`` (a term
  of its own); a binomial response ``p(successes, trials)`` of two columns (left of ``~`` only;
  ``Checked.trials`` names the trials column).

Anything else (other calls or attribute chains, subscripts ``x[a]``, keyword arguments, strings
outside ``Treatment(...)``, comparisons, ``True``/``None``, names starting ``__``, text after the
formula) is a :class:`~models.errors.DataError` of one line. Evaluation then happens in
:func:`env`, a namespace that holds only ``np``'s five allowed functions, never the caller's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from types import SimpleNamespace

import numpy as np

from varcomp.models.errors import DataError

__all__ = ["TRANSFORMS", "Checked", "check", "env", "evaluate", "expand_uncorrelated"]

NUMPY = ("log", "log1p", "exp", "sqrt", "abs")
STATEFUL = ("center", "scale", "standardize")
TRANSFORMS = (*(f"np.{f}" for f in NUMPY), *STATEFUL, "I", "C", "offset")
"""Every call a formula's terms may make (``p(successes, trials)`` is a response only)."""
ARITHMETIC = {"PLUS", "MINUS", "STAR", "SLASH", "STAR_STAR"}
FORMULA_OPS = {"PLUS", "MINUS", "COLON", "STAR", "SLASH", "STAR_STAR"}


@cache
def env():
    """The namespace formulas are evaluated in: ``np`` with its five allowed functions only.

    (``formulae`` adds its own transforms in front; the guard lets only :data:`TRANSFORMS`
    through.) Picklable, unlike a captured caller's namespace (which holds modules).
    """
    from formulae.environment import Environment

    return Environment([{"np": SimpleNamespace(**{f: getattr(np, f) for f in NUMPY})}])


@dataclass(frozen=True)
class Checked:
    """A checked formula's parts.

    ``response``: the response as written (a label, e.g. ``np.log(y)``); ``response_expr``: its
    ``formulae`` lazy expression (evaluate with :func:`evaluate`); ``fixed``: the fixed part
    without group terms and offsets, as text for ``formulae``; ``offsets``: (label, lazy
    expression) of each ``offset(...)``; ``groups``: each group term as (its left side's text,
    factor columns); ``variables``: every column the formula names (``response_vars``: those of
    the response); ``trials``: the trials column of a binomial response ``p(successes, trials)``
    (``response_vars`` is then (successes, trials) and ``response_expr`` None), else None.
    """

    response: str
    response_vars: tuple[str, ...]
    response_expr: object
    fixed: str
    offsets: tuple
    groups: tuple
    variables: tuple[str, ...]
    trials: str | None = None


def _refuse(formula: str, what: str) -> DataError:
    return DataError(f"the formula {formula!r} {what}; a formula may use data columns, numbers, "
                     f"+ - : * / ** ( ) | and {', '.join(TRANSFORMS)} (see docs/guide/cli.md)")


def _text(e) -> str:
    """The expression printed back as formula text (what ``formulae`` re-reads)."""
    kind = type(e).__name__
    if kind == "Binary":
        return f"{_text(e.left)} {e.operator.lexeme} {_text(e.right)}"
    if kind == "Unary":
        return f"{e.operator.lexeme}{_text(e.right)}"
    if kind == "Grouping":
        return f"({_text(e.expression)})"
    if kind == "Call":
        return f"{e.callee.name.lexeme}({', '.join(_text(a) for a in e.args)})"
    if kind == "Variable":
        return e.name.lexeme
    if kind == "QuotedName":
        return e.expression.lexeme
    if kind == "Assign":
        return f"{e.name.name.lexeme}={_text(e.value)}"
    if isinstance(e.value, float):
        return np.format_float_positional(e.value, trim="-")
    return e.lexeme if e.lexeme is not None else str(e.value)


class _Walk:
    def __init__(self, formula: str):
        self.formula, self.names = formula, []

    def bad(self, what: str) -> DataError:
        return _refuse(self.formula, what)

    def name(self, e) -> None:
        if type(e).__name__ == "QuotedName":
            self.names.append(e.expression.lexeme[1:-1])
            return
        if e.level is not None:
            raise self.bad(f"subscripts a name ({e.name.lexeme}[...])")
        name = e.name.lexeme
        if name == "Intercept":
            raise DataError(f"the formula {self.formula!r} names a column 'Intercept', which "
                            f"formulae reads as the intercept term: rename the column (e.g. "
                            f"to 'Intercept_col') and the formula with it")
        if any(part.startswith("__") for part in name.split(".")):
            raise self.bad(f"names {name!r} (a name starting with __)")
        self.names.append(name)

    def literal(self, e, strings: bool = False) -> None:
        v = e.value
        if isinstance(v, bool) or v is None or (isinstance(v, str) and not strings):
            raise self.bad(f"holds the value {_text(e)} (only numbers, and a level in "
                           f"C(x, Treatment(level)))")

    def arg(self, e) -> None:
        """An argument of a call: arithmetic of columns, numbers and allowed calls."""
        kind = type(e).__name__
        if kind in ("Variable", "QuotedName"):
            self.name(e)
        elif kind == "Literal":
            self.literal(e)
        elif kind == "Grouping":
            self.arg(e.expression)
        elif kind == "Unary" and e.operator.kind in ("PLUS", "MINUS"):
            self.arg(e.right)
        elif kind == "Binary" and e.operator.kind in ARITHMETIC:
            self.arg(e.left)
            self.arg(e.right)
        elif kind == "Call":
            self.call(e, inner=True)
        elif kind == "Assign":
            raise self.bad(f"passes a keyword argument ({e.name.name.lexeme}=...)")
        else:
            raise self.bad(f"uses {_text(e)!r} inside a call (only + - * / ** arithmetic)")

    def call(self, e, inner: bool = False) -> None:
        if type(e.callee).__name__ != "Variable" or e.callee.level is not None:
            raise self.bad(f"calls {_text(e.callee)!r}")
        f = e.callee.name.lexeme
        if f in ("p", "prop", "proportion"):
            raise DataError(f"{_text(e)}: a binomial response p(successes, trials) stands alone "
                            f"left of ~ (e.g. 'p(incidence, size) ~ period + (1|herd)')")
        if f not in TRANSFORMS:
            raise self.bad(f"calls {f}(), which is not an allowed transform")
        for a in e.args:
            if type(a).__name__ == "Assign":
                raise self.bad(f"passes a keyword argument ({_text(a)})")
        if f in ("C", "offset") and inner:
            raise self.bad(f"uses {f}() inside another call")
        if f == "C" and len(e.args) == 2:
            self.contrast(e.args[1])
        elif len(e.args) != 1:
            raise self.bad(f"calls {f}() with {len(e.args)} arguments (it takes one)")
        if f in STATEFUL and _holds_stateful(e.args[0]):
            raise self.bad(f"nests a centring/scaling transform inside {f}()")
        if f == "C" and type(e.args[0]).__name__ not in ("Variable", "QuotedName"):
            raise self.bad(f"applies C() to {_text(e.args[0])!r}, not a column")
        self.arg(e.args[0])

    def contrast(self, e) -> None:
        if not (type(e).__name__ == "Call" and type(e.callee).__name__ == "Variable"
                and e.callee.name.lexeme == "Treatment" and len(e.args) == 1
                and type(e.args[0]).__name__ == "Literal"):
            raise self.bad(f"gives C() the coding {_text(e)!r}; only C(x, Treatment(level))")
        self.literal(e.args[0], strings=True)

    def term(self, e) -> None:
        """A fixed-effects term: columns, numbers and calls joined by formula operators."""
        kind = type(e).__name__
        if kind in ("Variable", "QuotedName"):
            self.name(e)
        elif kind == "Literal":
            self.literal(e)
        elif kind == "Grouping":
            self.term(e.expression)
        elif kind == "Unary" and e.operator.kind in ("PLUS", "MINUS"):
            self.term(e.right)
        elif kind == "Binary" and e.operator.kind in FORMULA_OPS:
            self.term(e.left)
            self.term(e.right)
        elif kind == "Call":
            if _callee(e) == "offset":
                raise self.bad(f"uses {_text(e)} inside a term: write it as a term of its own "
                               f"(y ~ x + offset(z) + (1|g))")
            self.call(e)
        elif kind == "Binary" and e.operator.kind == "PIPE":
            raise self.bad(f"has the group term {_text(e)} inside another term: write (1|g) "
                           f"as a term of its own")
        else:
            raise self.bad(f"uses {_text(e)!r} (not a formula operator)")


def _callee(e) -> str:
    """The called name of a call expression ('' when the callee is not a plain name)."""
    return e.callee.name.lexeme if type(e.callee).__name__ == "Variable" else ""


def _holds_stateful(e) -> bool:
    kind = type(e).__name__
    if kind == "Call":
        return _callee(e) in STATEFUL or any(_holds_stateful(a) for a in e.args)
    if kind == "Binary":
        return _holds_stateful(e.left) or _holds_stateful(e.right)
    if kind in ("Unary",):
        return _holds_stateful(e.right)
    if kind == "Grouping":
        return _holds_stateful(e.expression)
    return False


def _summands(e, sign: str = "+"):
    """The top-level terms of a right-hand side, with their signs."""
    if type(e).__name__ == "Binary" and e.operator.kind in ("PLUS", "MINUS"):
        yield from _summands(e.left, sign)
        right = "-" if e.operator.kind == "MINUS" else "+"
        yield right if sign == "+" else ("+" if right == "-" else "-"), e.right
        return
    yield sign, e


def check(formula: str) -> Checked:
    """Parse and check ``formula`` without evaluating anything (one-line :class:`DataError`)."""
    from formulae.parser import Parser
    from formulae.scanner import Scanner
    from formulae.terms.call_resolver import CallResolver

    if not isinstance(formula, str) or not formula.strip():
        raise DataError("the formula is empty: write e.g. 'y ~ x + (1|g)'")
    if formula.lstrip().startswith("~") or "~" not in formula:
        raise DataError(f"the formula {formula!r} has no response: write 'y ~ ...' (the "
                        f"response column, then ~)")
    text = expand_uncorrelated(formula)
    try:
        parser = Parser(Scanner(text).scan(add_intercept=False))
        tree = parser.parse()
    except Exception as exc:  # formulae's ParseError / ScanError
        raise DataError(f"cannot parse the formula {formula!r}: {exc} (e.g. "
                        f"'y ~ x + C(group2) + (1|g)')") from None
    if not parser.at_end():
        raise DataError(f"cannot parse the formula {formula!r}: unexpected "
                        f"{parser.peek().lexeme!r} after {_text(tree)!r}")
    if type(tree).__name__ != "Binary" or tree.operator.kind != "TILDE":
        raise DataError(f"the formula {formula!r} needs the form 'y ~ terms'")
    w = _Walk(formula)
    resp = tree.left
    trials = None
    if type(resp).__name__ in ("Variable", "QuotedName"):
        w.name(resp)
    elif type(resp).__name__ == "Call" and _callee(resp) == "p" and len(resp.args) == 2 and \
            all(type(a).__name__ in ("Variable", "QuotedName") for a in resp.args):
        for a in resp.args:
            w.name(a)
        trials = w.names[-1]
    elif _holds_stateful(resp) or type(resp).__name__ == "Call" and \
            _callee(resp) in ("p", "prop", "proportion", "C", "offset"):
        if _callee(resp) in ("p", "prop", "proportion"):
            w.call(resp)  # refused with the binomial message
        raise DataError(f"the response {_text(resp)} is not supported: a response may be a "
                        f"column or np.log/np.log1p/np.exp/np.sqrt/np.abs/I() of columns")
    else:
        w.arg(resp)
    response_vars = tuple(dict.fromkeys(w.names))
    fixed, offsets, groups = [], [], []
    for sign, e in _summands(tree.right):
        inner = e.expression if type(e).__name__ == "Grouping" else None
        if type(inner).__name__ == "Binary" and inner.operator.kind == "PIPE":
            if sign == "-":
                raise w.bad(f"subtracts the group term {_text(e)}")
            coefs = _coefficients(w, inner.left, _text(e))
            groups += [(f, coefs) for f in _group_factors(w, inner.right)]
            continue
        if type(e).__name__ == "Call" and _callee(e) == "offset":
            if sign == "-":
                raise w.bad(f"subtracts {_text(e)}: write offset(-{_text(e.args[0])})"
                            if e.args else f"subtracts {_text(e)}")
            w.call(e)
            if e.args and _holds_stateful(e.args[0]):
                raise w.bad(f"centres or scales inside {_text(e)}: an offset is used as it is")
            offsets.append((_text(e), CallResolver(e.args[0]).resolve()))
            continue
        w.term(e)
        fixed.append((sign, _text(e)))
    text = " ".join(f"{s} {t}" for s, t in fixed).lstrip("+ ").strip()
    if fixed and fixed[0][0] == "-":
        text = "1 " + text
    variables = tuple(dict.fromkeys(w.names))
    seen = set()
    for f, coefs in groups:
        for c in coefs:
            if (f, c) in seen:
                lhs = "1" if c == "Intercept" else f"0 + {c}"
                raise DataError(f"the formula {formula!r} writes the term ({lhs}|{':'.join(f)}) "
                                f"twice (directly or through a/b): write it once")
            seen.add((f, c))
    expr = None if trials else CallResolver(resp).resolve()
    return Checked(_text(resp), response_vars, expr, text or "1", tuple(offsets), tuple(groups),
                   variables, trials)


def _group_factors(w: _Walk, e) -> tuple[tuple[str, ...], ...]:
    """The factors of a group term's right side, each as its columns.

    ``g``; ``a:b`` one factor of both; ``a/b`` the two factors ``a`` and ``a:b`` (formulae's and
    lme4's expansion).
    """
    kind = type(e).__name__
    if kind == "Grouping":
        return _group_factors(w, e.expression)
    if kind == "Binary" and e.operator.kind == "COLON":
        left, right = _group_factors(w, e.left), _group_factors(w, e.right)
        return tuple(a + b for a in left for b in right)
    if kind == "Binary" and e.operator.kind == "SLASH":
        left, right = _group_factors(w, e.left), _group_factors(w, e.right)
        outer = tuple(dict.fromkeys(v for f in left for v in f))
        return left + tuple(outer + b for b in right)
    if kind in ("Variable", "QuotedName"):
        w.name(e)
        return ((w.names[-1],),)
    raise w.bad(f"groups by {_text(e)!r}: a group term's factor is a column or columns joined "
                f"by : or / (e.g. (1|g), (1|a/b))")


def _identity(x):
    return x


def evaluate(expr, columns: dict) -> np.ndarray:
    """A checked lazy expression's values over ``columns`` (name -> float array), in :func:`env`.

    Non-finite results (log of 0, ...) are returned as they are: the caller drops those rows.
    """
    from formulae.environment import Environment

    with np.errstate(all="ignore"):
        out = expr.eval(columns, Environment([{"I": _identity}]).with_outer_namespace(
            env().namespace))
    return np.asarray(out, dtype=np.float64).reshape(-1)


def _coefficients(w: _Walk, e, term: str) -> tuple[str, ...]:
    """The coefficient columns of a group term's left side, read as lme4 reads them.

    ``1`` the intercept, ``x`` a numeric column's slope, the intercept implied unless ``0`` or
    ``-1`` is written.
    """
    intercept, cols = True, []
    for sign, t in _summands(e):
        kind = type(t).__name__
        if kind == "Unary" and t.operator.kind == "MINUS":
            sign, t, kind = ("-" if sign == "+" else "+"), t.right, type(t.right).__name__
        if kind == "Literal" and not isinstance(t.value, (str, bool)) and t.value in (0, 1):
            intercept = sign == "+" and t.value == 1
            continue
        if kind in ("Variable", "QuotedName") and sign == "+":
            w.name(t)
            if w.names[-1] in cols:
                raise w.bad(f"names the slope {w.names[-1]} twice in {term}")
            cols.append(w.names[-1])
            continue
        if kind == "Call" and _callee(t) == "C":
            raise DataError(f"{term}: a random slope is a numeric column, not the categorical "
                            f"{_text(t)}; for effects that vary by level write (1|g) + (1|g:z) "
                            f"with z the column")
        shown = ("-" if sign == "-" else "") + _text(t)
        raise w.bad(f"has {shown} in {term}: a group term's left side is 1, 0 and "
                    f"numeric columns joined by + (e.g. (1 + x|g)); compute a transformed slope "
                    f"as a column of its own")
    if not intercept and not cols:
        raise w.bad(f"has {term}, which has no coefficient: write (1|g)")
    return (("Intercept",) if intercept else ()) + tuple(cols)


_NAME = re.compile(r"^(?:[A-Za-z_.][\w.]*|`[^`]+`)$")


def expand_uncorrelated(formula: str) -> str:
    """lme4's uncorrelated terms rewritten as text: ``(1 + x || g)`` -> ``(1|g) + (0 + x|g)``.

    ``formulae`` cannot parse ``||``; the rewrite only moves text (nothing is evaluated), takes
    1, 0 and column names joined by + on the left, and refuses anything else with one line. Its
    result is then checked like any formula.
    """
    out = formula
    while (i := out.find("||")) >= 0:
        j, depth = i - 1, 0
        while j >= 0 and not (out[j] == "(" and depth == 0):
            depth += {")": 1, "(": -1}.get(out[j], 0)
            j -= 1
        k, depth = i + 2, 0
        while k < len(out) and not (out[k] == ")" and depth == 0):
            depth += {"(": 1, ")": -1}.get(out[k], 0)
            k += 1
        lhs, rhs = out[j + 1:i].strip(), out[i + 2:k].strip()
        parts = [p.strip() for p in lhs.split("+")]
        if j < 0 or k >= len(out) or "|" in lhs + rhs or not rhs or not all(
                p in ("0", "1", "-1") or _NAME.match(p) for p in parts):
            raise DataError(f"the formula {formula!r} writes an uncorrelated term "
                            f"({lhs} || {rhs}) varcomp cannot read: write (1 + x || g) with 1, "
                            f"0 and column names joined by +, or the terms out as "
                            f"(1|g) + (0 + x|g)")
        cols = [p for p in parts if _NAME.match(p)]
        terms = ([f"(1|{rhs})"] if not {"0", "-1"} & set(parts) else []) + \
            [f"(0 + {c}|{rhs})" for c in cols]
        out = out[:j] + " + ".join(terms or [f"(0|{rhs})"]) + out[k + 1:]
    return out
