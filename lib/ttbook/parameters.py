"""A chapter's parameters: names, defaults, meanings, domains, and checking values a user passes.

Every chapter has one code cell tagged ``parameters`` holding plain-literal assignments, each
with its meaning and, after a bar, its domain (:mod:`ttbook.domains`) as a trailing comment, and
``# require:`` lines for the rules between knobs::

    d = 20  # feature dimension | int ≥ 1
    # require: all(k <= k_max for k in frontier_k) -> every frontier_k must be ≤ k_max

:func:`describe` reads that cell (without running anything); :func:`parse` turns the text a
user typed (``-p d 40``) into a value of the default's type; :func:`validate` is the one place
that decides whether a complete set of values is valid; :func:`resolve` checks a set of
overrides with it, so that an unknown name, a value of the wrong type or outside its domain, or a
broken rule is rejected *before* a kernel starts (papermill alone would silently inject an unknown
name); :func:`enforce` is what a chapter calls in the cell after its parameters; :func:`sample`
draws a random valid set (the random-parameter test). Used by ``python -m ttbook`` (``params``,
``run`` and ``sweep``) and by every chapter.
"""

from __future__ import annotations

import ast
import io
import math
import tokenize
from dataclasses import dataclass
from typing import Any

from . import chapters, domains as _domains

__all__ = ["Parameter", "describe", "requirements", "parse", "check", "validate", "enforce", "resolve", "sample",
           "split_values", "type_name"]


@dataclass(frozen=True)
class Parameter:
    """One knob of a chapter: its name, default value, meaning, and smoke value (if any)."""

    name: str
    default: Any
    meaning: str = ""
    smoke: Any = None
    has_smoke: bool = False
    domain: Any = None  # a ttbook.domains.Domain, declared after "|" in the meaning comment


def _comments(source: str) -> dict[int, tuple[str, bool]]:
    """Line number -> (comment text, whether the comment is the whole line)."""
    out = {}
    lines = source.splitlines()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            row, col = tok.start
            whole = not lines[row - 1][:col].strip()
            out[row] = (tok.string.lstrip("#").strip(), whole)
    return out


def describe_source(source: str, smoke: dict | None = None) -> list[Parameter]:
    """The parameters assigned in a parameters-cell ``source`` (see :func:`describe`)."""
    tree = ast.parse(source)
    comments = _comments(source)
    smoke = smoke or {}
    out = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            target, value = node.targets[0].id, node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            target, value = node.target.id, node.value
        else:
            continue
        try:
            default = ast.literal_eval(value)
        except ValueError as exc:
            raise ValueError(f"parameter {target!r} must be assigned a plain literal in the parameters cell") from exc
        meaning = ""
        for line in (node.end_lineno, node.lineno):  # trailing comment on the assignment
            if line in comments and not comments[line][1]:
                meaning = comments[line][0]
                break
        if not meaning:  # else whole-line comments directly above it
            above, line = [], node.lineno - 1
            while line in comments and comments[line][1] and not comments[line][0].startswith("require:"):
                above.insert(0, comments[line][0])
                line -= 1
            meaning = " ".join(above)
        domain = None
        if " | " in meaning or meaning.startswith("| "):
            meaning, _, text = (" " + meaning).rpartition(" | ")
            meaning = meaning.strip()
            try:
                domain = _domains.parse_domain(text)
            except ValueError as exc:
                raise ValueError(f"parameter {target!r}: {exc}") from None
        out.append(Parameter(target, default, meaning, smoke.get(target), target in smoke, domain))
    return out


def requirements_source(source: str) -> list:
    """The ``# require: EXPRESSION -> RULE`` lines of a parameters-cell ``source``."""
    return [_domains.parse_requirement(text[len("require:"):]) for text, whole in _comments(source).values()
            if whole and text.startswith("require:")]


def describe(name) -> list[Parameter]:
    """The parameters of chapter ``name``, in the order of its parameters cell.

    The meaning is the trailing ``# comment`` on the assignment's line (or, failing that, the
    comment lines directly above it); the smoke value comes from the front matter ``smoke:``.
    """
    return describe_source(chapters.parameters_cell(name), chapters.smoke_parameters(name))


def type_name(default) -> str:
    """A short name of the type a parameter's values must have."""
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, (list, tuple)):
        kinds = {type_name(v) for v in default}
        if len(kinds) == 1:
            return f"list of {kinds.pop()}"
        return "list"
    if default is None:
        return "any"
    return type(default).__name__


def check(name: str, default, value):
    """``value`` converted to the type of ``default`` (int accepted for float), or ValueError.

    bool must be bool; int must be an integer (not a bool, not 2.5); float accepts int and
    float; str must be str; a list must be a list whose elements have the type of the default's
    elements (when those share one type); a default of None accepts anything.
    """
    want = type_name(default)

    def bad():
        return ValueError(f"parameter {name!r} must be {_article(want)} {want} (default {default!r}), got {value!r}")

    if default is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise bad()
    if isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad()
    if isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise bad()
    if isinstance(default, str):
        if isinstance(value, str):
            return value
        raise bad()
    if isinstance(default, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            raise bad()
        kinds = {type(v) for v in default}
        if len(default) and len(kinds) == 1:
            try:
                return [check(name, default[0], v) for v in value]
            except ValueError:
                raise bad() from None
        return list(value)
    if isinstance(default, dict):
        if isinstance(value, dict):
            return value
        raise bad()
    if type(value) is type(default):
        return value
    raise bad()


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


_TRUE, _FALSE = {"true", "yes", "on"}, {"false", "no", "off"}  # not 1/0: an int is not a bool


def parse(name: str, default, text):
    """The value a user typed (``text``) for the parameter ``name``, checked against ``default``.

    Text is read as a Python literal (``40``, ``1e-3``, ``[1, 2]``, ``'abc'``); ``inf``/``nan``
    are floats; ``true``/``false`` (any case) are bools; for a str parameter unquoted text is
    taken as it is. Non-str input (already a value) is only checked.
    """
    if not isinstance(text, str):
        return check(name, default, text)
    raw = text.strip()
    if isinstance(default, bool):
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        return check(name, default, raw)
    if isinstance(default, str):
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            return raw
        return value if isinstance(value, str) else raw
    if isinstance(default, float) and raw.lower().lstrip("+-") in {"inf", "infinity", "nan"}:
        return float(raw)
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        if default is None:
            return raw
        value = raw
    return check(name, default, value)


def requirements(name) -> list:
    """The relations between chapter ``name``'s parameters (``# require:`` lines of its parameters cell)."""
    return requirements_source(chapters.parameters_cell(name))


def validate(name, values: dict) -> dict:
    """Every value of chapter ``name`` (defaults where ``values`` is silent) checked against its domain
    and every requirement; returns the complete, converted set or raises ValueError at the first fault.

    The one place that decides what a chapter accepts: :func:`resolve` (the CLI) and :func:`enforce`
    (the chapter itself) both call it.
    """
    params = describe(name)
    full = {p.name: p.default for p in params}
    full.update(values)
    return _domains.check(full, {p.name: p.domain for p in params if p.domain is not None}, requirements(name))


def enforce(name, namespace: dict) -> None:
    """Check the parameters a chapter is running with (its ``globals()``) and write back converted values.

    Called in the cell after a chapter's parameters cell, so a run with a bad value stops there
    with the sentence that names the parameter and the rule, before any work.
    """
    names = [p.name for p in describe(name)]
    missing = [n for n in names if n not in namespace]
    if missing:
        raise ValueError(f"the parameters cell of {name!r} has not run: {', '.join(missing)} undefined")
    checked = validate(name, {n: namespace[n] for n in names})
    for n in names:
        if type(checked[n]) is not type(namespace[n]) or checked[n] != namespace[n]:
            namespace[n] = checked[n]


def resolve(name, overrides: dict | None = None, *, smoke: bool = False) -> dict:
    """The checked overrides for chapter ``name``: smoke values (if ``smoke``) then ``overrides``.

    Values may be text (as typed on a command line) or Python values. Raises ValueError naming
    the unknown parameter and listing the valid ones, naming the parameter whose value has the
    wrong type or is outside its domain, or stating the relation between parameters it breaks
    (:func:`validate`), all before any kernel starts.
    """
    params = {p.name: p for p in describe(name)}
    out = {}
    if smoke:
        for p in params.values():
            if p.has_smoke:
                out[p.name] = check(p.name, p.default, p.smoke)
    for key, text in (overrides or {}).items():
        if key not in params:
            import difflib

            close = difflib.get_close_matches(key, list(params), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown parameter {key!r} for chapter {chapters.chapter_path(name).stem!r}{hint}; "
                             f"valid parameters: {', '.join(params)}")
        out[key] = parse(key, params[key].default, text)
    checked = validate(name, out)
    return {k: checked[k] for k in out}


def split_values(text: str) -> list[str]:
    """Split ``10,20,40`` into its values, keeping commas inside brackets or quotes together.

    ``[1,2],[3]`` -> ``['[1,2]', '[3]']``; ``'a,b',c`` -> ``["'a,b'", 'c']``.
    """
    out, depth, quote, start = [], 0, None, 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(text[start:i].strip())
            start = i + 1
    out.append(text[start:].strip())
    if any(v == "" for v in out):
        raise ValueError(f"empty value in the list {text!r}")
    return out


def format_value(value) -> str:
    """A value as a reader would type it back (floats in shortest form)."""
    if isinstance(value, float) and (math.isinf(value) or math.isnan(value)):
        return str(value)
    return repr(value)


def sample(name, seed: int = 0, *, keep=(), tries: int = 200) -> dict:
    """A valid set of overrides for chapter ``name`` drawn at random from its declared domains.

    Small sizes, wide ranges: each value starts from the smoke value (else the default) v and moves
    within its domain without growing much — an int is drawn log-uniformly from [max(lo, ⌈v/4⌉), v]
    (so m < d and short chains come up), a float from v·[1/4, 4] log-uniformly, a list keeps a
    random non-empty subset of its entries, a bool or a choice is drawn, a seed anywhere in
    [0, 10⁶). Names in ``keep`` (and str parameters) stay as they are. Draws are repeated until
    every requirement holds (at most ``tries`` times; then ValueError). Seeded: the same ``seed``
    gives the same overrides.
    """
    import random

    rng = random.Random(f"{chapters.chapter_path(name).stem}-{seed}")
    params = describe(name)
    base = {p.name: (p.smoke if p.has_smoke else p.default) for p in params}

    def draw_scalar(dom, v, values):
        if dom.base == "bool":
            return rng.random() < 0.5
        if dom.base == "choice":
            return rng.choice(dom.choices)
        if dom.base not in ("int", "float") or v is None or isinstance(v, bool):
            return v
        lo = dom._bound(dom.lo, values)
        hi = dom._bound(dom.hi, values)
        if dom.base == "int":
            a = max(1, math.ceil(v / 4), lo + (1 if dom.lo_open else 0)) if lo is not None else max(1, math.ceil(v / 4))
            b = v if hi is None else min(v, hi - (1 if dom.hi_open else 0))
            if a > b:
                return v
            return min(b, max(a, int(round(math.exp(rng.uniform(math.log(a), math.log(b + 0.5)))))))
        x = v * math.exp(rng.uniform(math.log(0.25), math.log(4.0))) if v else rng.uniform(0.0, 1.0)
        if lo is not None:
            x = max(x, lo)
        if hi is not None:
            x = min(x, hi)
        return float(f"{x:.3g}")  # readable in a report; validate() below still checks the domain

    for _ in range(tries):
        out = {}
        for p in params:
            v = base[p.name]
            if p.name in keep or p.domain is None or p.domain.base == "str":
                out[p.name] = v
            elif p.name == "seed":
                out[p.name] = rng.randrange(10**6)
            elif p.domain.is_list and isinstance(v, (list, tuple)) and v:
                picked = sorted(rng.sample(range(len(v)), rng.randint(1, len(v))))
                out[p.name] = [draw_scalar(p.domain, v[i], {**base, **out}) if p.domain.base == "bool" else v[i]
                               for i in picked]
            else:
                out[p.name] = draw_scalar(p.domain, v, {**base, **out})
        try:
            checked = validate(name, out)
        except ValueError:
            continue
        return {k: checked[k] for k in out}
    raise ValueError(f"no valid parameters for {name!r} found in {tries} draws (are its requirements satisfiable?)")
