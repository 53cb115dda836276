"""Parameter domains: what values each knob of a chapter accepts, declared once in its parameters cell.

Each assignment in a chapter's parameters cell carries its meaning and, after `` | `` (a bar between spaces), its domain::

    d = 20                 # feature dimension | int ≥ 2
    n_train = [10, 20]     # training prompt lengths | non-empty list of int ≥ 1
    alpha = 1.0            # power-law exponent | float ≥ 0
    level = 0.5            # weak-skill level | float in [0, 1]
    covariance = "power_law"  # the hard family | one of "power_law", "identity"
    rotate = False         # random eigenbasis | bool
    n_layer = None         # None: from the preset | int ≥ 1 or None

Relations between knobs are whole-line comments of the form ``# require: EXPRESSION -> RULE``, a
Python expression over the parameters and the rule in words::

    # require: all(k <= k_max for k in frontier_k) -> every frontier_k must be ≤ k_max

The grammar of a domain: ``[non-empty] [list of] BASE [or None]`` where BASE is ``bool``, ``str``,
``any``, ``one of V1, V2, ...`` (literals), or ``int`` / ``float`` optionally followed by a bound
(``≥ a``, ``> a``, ``≤ b``, ``< b``; ``>=`` and ``<=`` are read too, but papermill misreads an ``=``
in a parameter's comment) or an interval (``in [a, b]``, ``in (a, b]``, ...). Bounds may name
another parameter (``int ≥ d``), so a knob's range can follow another's value.

:func:`check` is the one place that decides whether a complete set of values is valid; the CLI
calls it before a kernel starts and every chapter calls it (through :func:`enforce`) in the cell
after its parameters, so a plain papermill run stops there with the same sentence.
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Domain", "Requirement", "parse_domain", "parse_requirement", "check"]

_OUTSIDE = object()  # what _scalar returns for a value outside the domain
_SAFE = {"all": all, "any": any, "len": len, "list": list, "tuple": tuple, "zip": zip, "min": min, "max": max, "sorted": sorted, "set": set, "abs": abs,
         "sum": sum, "int": int, "float": float, "round": round, "range": range, "isinstance": isinstance}


@dataclass(frozen=True)
class Domain:
    """The values one parameter accepts."""

    base: str  # "int", "float", "bool", "str", "any" or "choice"
    text: str  # the declaration as written, quoted in error messages
    lo: Any = None  # a number or the name of another parameter
    hi: Any = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple = ()
    is_list: bool = False
    non_empty: bool = False
    optional: bool = False

    def check(self, name: str, value, values: dict | None = None):
        """``value`` (converted: an int is accepted for a float) or ValueError naming ``name`` and the rule."""
        values = values or {}

        def bad(what=None):
            return ValueError(f"parameter {name!r} must be {what or self.describe(values)}, got {value!r}")

        if value is None:
            if self.optional:
                return None
            raise bad()
        if self.is_list:
            if not isinstance(value, (list, tuple)):
                raise bad()
            if self.non_empty and len(value) == 0:
                raise bad()
            out = []
            for v in value:
                v = self._scalar(v, values)
                if v is _OUTSIDE:
                    raise bad()
                out.append(v)
            return out
        value_out = self._scalar(value, values)
        if value_out is _OUTSIDE:
            raise bad()
        return value_out

    def _scalar(self, value, values):
        """The value converted, or ``_OUTSIDE`` when it is not in the domain (the caller words the error)."""
        if self.base == "any":
            return value
        if self.base == "bool":
            if isinstance(value, bool):
                return value
            return _OUTSIDE
        if self.base == "str":
            if isinstance(value, str):
                return value
            return _OUTSIDE
        if self.base == "choice":
            if any(type(value) is type(c) and value == c for c in self.choices):
                return value
            return _OUTSIDE
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return _OUTSIDE
        if self.base == "int":
            if not isinstance(value, int):
                return _OUTSIDE
        else:
            value = float(value)
            if not math.isfinite(value):
                return _OUTSIDE
        lo, hi = self._bound(self.lo, values), self._bound(self.hi, values)
        if lo is not None and (value < lo or (self.lo_open and value == lo)):
            return _OUTSIDE
        if hi is not None and (value > hi or (self.hi_open and value == hi)):
            return _OUTSIDE
        return value

    @staticmethod
    def _bound(b, values):
        if isinstance(b, str):
            v = values.get(b)
            return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None
        return b

    def describe(self, values: dict | None = None) -> str:
        """The rule in words, with any bound that names a parameter resolved (``an int >= d = 20``)."""
        text = self.text
        for b in (self.lo, self.hi):
            if isinstance(b, str) and values and b in values:
                text = re.sub(rf"\b{re.escape(b)}\b", f"{b} = {values[b]!r}", text, count=1)
        first = text.split()[0]
        if first in ("non-empty", "one"):
            return text if first == "one" else f"a {text}"
        if first == "list":
            return f"a {text}"
        return f"{'an' if first[:1] in 'aeiou' else 'a'} {text}"


@dataclass(frozen=True)
class Requirement:
    """A rule relating several parameters: a Python expression that must be true, and its wording."""

    expression: str
    rule: str
    names: tuple = field(default=())

    def check(self, values: dict) -> None:
        """ValueError with the rule and the values it involves when the expression is false."""
        try:
            ok = eval(compile(self.expression, "<require>", "eval"), {"__builtins__": _SAFE, **values})
        except Exception as exc:  # noqa: BLE001 - a value of the wrong shape breaks the rule too
            ok, why = False, f"; evaluating it raised {type(exc).__name__}: {exc}"
        else:
            why = ""
        if not ok:
            got = ", ".join(f"{n} = {values[n]!r}" for n in self.names if n in values)
            raise ValueError(f"{self.rule} (got {got}){why}")


_NUM = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|inf)"
_BOUND = rf"(?:{_NUM}|[A-Za-z_]\w*)"


def _number_or_name(text: str):
    text = text.strip()
    if re.fullmatch(r"[A-Za-z_]\w*", text) and text != "inf":
        return text
    v = float(text)
    return int(v) if v.is_integer() and "." not in text and "e" not in text.lower() and "inf" not in text else v


def parse_domain(text: str) -> Domain:
    """A :class:`Domain` from its declaration (see the module docstring); ValueError if malformed."""
    raw = " ".join(text.split())
    rest = raw.replace("≥", ">=").replace("≤", "<=")  # chapters write ≥ and ≤: papermill misreads "=" in a comment
    non_empty = rest.startswith("non-empty ")
    if non_empty:
        rest = rest[len("non-empty "):]
    is_list = rest.startswith("list of ")
    if is_list:
        rest = rest[len("list of "):]
    elif non_empty:
        raise ValueError(f"domain {text!r}: 'non-empty' applies to a list ('non-empty list of ...')")
    optional = rest.endswith(" or None")
    if optional:
        rest = rest[: -len(" or None")]
    common = dict(text=raw, is_list=is_list, non_empty=non_empty, optional=optional)
    if rest in ("bool", "str", "any"):
        return Domain(rest, **common)
    if rest.startswith("one of "):
        try:
            choices = ast.literal_eval(f"({rest[len('one of '):]},)")
        except (ValueError, SyntaxError) as exc:
            raise ValueError(f"domain {text!r}: 'one of' must list literals") from exc
        return Domain("choice", choices=tuple(choices), **common)
    m = re.fullmatch(r"(int|float)(?:\s+(.*))?", rest)
    if not m:
        raise ValueError(f"domain {text!r} is not one of: bool, str, any, one of ..., int/float [bound]")
    base, bound = m.group(1), (m.group(2) or "").strip()
    if not bound:
        return Domain(base, **common)
    m2 = re.fullmatch(rf"(>=|>|<=|<)\s*({_BOUND})", bound)
    if m2:
        op, v = m2.group(1), _number_or_name(m2.group(2))
        if op in (">=", ">"):
            return Domain(base, lo=v, lo_open=op == ">", **common)
        return Domain(base, hi=v, hi_open=op == "<", **common)
    m3 = re.fullmatch(rf"in\s*([\[(])\s*({_BOUND})\s*,\s*({_BOUND})\s*([\])])", bound)
    if m3:
        return Domain(base, lo=_number_or_name(m3.group(2)), hi=_number_or_name(m3.group(3)),
                      lo_open=m3.group(1) == "(", hi_open=m3.group(4) == ")", **common)
    raise ValueError(f"domain {text!r}: the bound must be '>= a', '> a', '<= b', '< b' or 'in [a, b]'")


def parse_requirement(text: str) -> Requirement:
    """A :class:`Requirement` from ``EXPRESSION -> RULE``; ValueError if malformed."""
    if "->" not in text:
        raise ValueError(f"requirement {text!r} must read 'EXPRESSION -> rule in words'")
    expr, rule = (part.strip() for part in text.rsplit("->", 1))
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"requirement {text!r}: {expr!r} is not a Python expression") from exc
    bound = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    found = sorted((n.col_offset, n.id) for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id not in _SAFE
                   and n.id not in bound)
    names = tuple(dict.fromkeys(name for _, name in found))  # in the order they are written
    return Requirement(expr, rule, names)


def check(values: dict, domains: dict, requirements=()) -> dict:
    """The values, each checked against its domain, then every requirement; ValueError at the first fault.

    ``domains`` maps names to :class:`Domain` (names without one are passed through);
    bounds that name another parameter are read from the (converted) values.
    """
    out = dict(values)
    for name, dom in domains.items():
        if name in out and not (isinstance(dom.lo, str) or isinstance(dom.hi, str)):
            out[name] = dom.check(name, out[name], out)
    for name, dom in domains.items():  # bounds that follow another parameter, once those are checked
        if name in out and (isinstance(dom.lo, str) or isinstance(dom.hi, str)):
            out[name] = dom.check(name, out[name], out)
    for req in requirements:
        req.check(out)
    return out
