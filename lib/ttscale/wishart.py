"""Exact moments of Wishart matrices: the algebra behind the finite-m theory of CoT.

Two exact methods, both for Gaussian features.

**Trace moments of a real Wishart matrix** (:func:`trace_moments`, :func:`mixed_moment`).
For W = X Xᵀ with X a d × m matrix of independent N(0, 1) entries, the expectations
E[tr W^{j_1} ⋯ tr W^{j_ℓ}] are integers, polynomials in d and m. Gaussian integration by
parts, E[X_ab F(X)] = E[∂F/∂X_ab], applied to one factor tr W^j gives the loop equation

    E[p_j p_ν] = (m + j − 1) E[p_{j−1} p_ν] + Σ_{r=0}^{j−2} E[p_{r+1} p_{j−2−r} p_ν]
                 + Σ_{a ∈ ν} 2a E[p_{j+a−1} p_{ν∖a}],

with p_j = tr W^j, p_0 = d and ν the other factors. Every term on the right has total degree
one less, so the equation determines every moment from E[1] = 1. Expanding always the
*smallest* factor keeps the set of mixed moments ever needed small (about 11 000 for
E tr W^60, 10⁵ for E tr W^100); the integers are exact (Python ints), so sums of these moments
with alternating binomial coefficients — which cancel catastrophically in floating point —
can be taken exactly in rational arithmetic.

**Gaussian moment expansion for any matrices** (:func:`trace_expectation`). For
Ŝ = (1/m) Σ_i x_i x_iᵀ with x_i ~ N(0, Σ) and fixed matrices B_1, …, B_r,

    E tr(B_1 Ŝ B_2 Ŝ ⋯ B_r Ŝ) = Σ_π m^{c(π) − r} · Π_{cycles of π} tr(…)

where π runs over the (2r − 1)!! pairings of the 2r copies of x (Isserlis), each pair
contributing Σ; the matrices B_t (transposed where a cycle runs backwards) and Σ alternate
around the cycles that π closes; and c(π) is the number of groups of Ŝ factors that π joins.
The weight m^{c − r} is exact: summing the falling factorials m(m−1)⋯(m−b+1) of the ways to
give the factors' samples over every coarsening of π's groups gives m^c. The cost is
(2r − 1)!! products of r matrices: 945 for r = 5, 10 395 for r = 6, 135 135 for r = 7, so
the method is offered up to r = 6 (three CoT steps).

**Sampling** (:func:`sample_covariances`): the sample covariance Ŝ_m of m Gaussian features
drawn from its Wishart law directly (Bartlett's decomposition), d(d + 1)/2 random numbers per
prompt instead of the d·m of the features, for Monte Carlo that needs Ŝ_m and nothing else.

Used by :mod:`ttscale.theory` (``finite_m_error``).
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache
from math import comb
from typing import NamedTuple

import numpy as np

from . import checks

__all__ = [
    "trace_moments",
    "mixed_moment",
    "trace_expectation",
    "sample_covariances",
    "pairings",
    "narayana_moments",
    "MAX_DEGREE",
    "MAX_FACTORS",
]

#: Largest total degree offered by :func:`trace_moments` and :func:`mixed_moment` (E tr W^120
#: needs about 3·10⁵ mixed moments and a few seconds; the count grows about 7× per 40 degrees).
MAX_DEGREE = 120
#: Largest number of Ŝ factors :func:`trace_expectation` accepts ((2r − 1)!! pairings).
MAX_FACTORS = 6


class _LoopEquations:
    """Memo of E[p_μ] for one (d, m); μ a partition, stored as a descending tuple."""

    def __init__(self, d: int, m: int):
        self.d, self.m = d, m
        self.memo: dict[tuple, int] = {(): 1}

    def value(self, mu: tuple) -> int:
        """E[p_μ] by the loop equation on μ's smallest part j (recursion depth = degree of μ).

        Most look-ups hit the memo, so they are made inline (``get``) and only a miss recurses.
        """
        memo, d, m, E = self.memo, self.d, self.m, self.value
        get = memo.get
        v = get(mu)
        if v is not None:
            return v
        j, rest = mu[-1], mu[:-1]
        # the parts j − 1, r + 1 and j − 2 − r are smaller than every part of rest, so appending
        # them in descending order keeps the tuple sorted; a zero part is a factor p_0 = d
        if j > 1:
            key = rest + (j - 1,)
            v = get(key)
            total = (m + j - 1) * (E(key) if v is None else v)
        else:
            v = get(rest)
            total = (m + j - 1) * d * (E(rest) if v is None else v)
        if j > 1:
            key = rest + (j - 1,)  # r = j − 2: parts (j − 1, 0), the p_0 = d term
            v = get(key)
            total += d * (E(key) if v is None else v)
        for r in range(j - 2):  # both parts >= 1; the pairs (a, b) and (b, a) give the same key
            a, b = r + 1, j - 2 - r
            key = rest + ((a, b) if a >= b else (b, a))
            v = get(key)
            total += E(key) if v is None else v
        for key, coeff in _merged_parts(rest, j):  # merge p_j with each distinct other part
            v = get(key)
            total += coeff * (E(key) if v is None else v)
        memo[mu] = total
        return total


@lru_cache(maxsize=64)
def _equations(d: int, m: int) -> _LoopEquations:
    return _LoopEquations(d, m)


def _dims(d, m):
    d = checks.positive_int(d, "d")
    m = checks.positive_int(m, "m")
    return d, m


def trace_moments(d: int, m: int, j_max: int) -> list[int]:
    """[E tr W^j for j = 0 … j_max], exact integers, W = X Xᵀ, X a d × m standard Gaussian matrix.

    E tr W^0 = d, E tr W = dm, E tr W² = dm(m + d + 1), … (real Wishart, m degrees of
    freedom; any m ≥ 1, also m < d). Computed by the loop equations of the module docstring;
    results are cached per (d, m), so a longer list later reuses the shorter one's work.
    ``j_max`` is at most :data:`MAX_DEGREE`.
    """
    d, m = _dims(d, m)
    j_max = checks.nonnegative_int(j_max, "j_max")
    if j_max > MAX_DEGREE:
        raise ValueError(
            f"j_max must be <= {MAX_DEGREE} (the loop equations need ~10^6 mixed moments beyond it), got {j_max}"
        )
    if j_max == 0:
        return [d]
    return [d] + list(_trace_values(d, m, -(-j_max // 8) * 8)[1: j_max + 1])  # few distinct plans


@lru_cache(maxsize=64)
def _trace_values(d: int, m: int, degree: int) -> tuple:
    """(d, E tr W, …, E tr W^degree) by the loop equations, evaluated on :func:`_loop_plan`.

    The plan (which mixed moments are needed and how each is made from the ones of degree one
    less) does not depend on d or m, so it is built once; per (d, m) the values follow degree by
    degree, each degree one vectorised gather-multiply-sum over exact Python integers.
    """
    plan = _loop_plan(degree)
    small = m * d + m + d + degree < 2**62
    if small:
        coef = plan.c0 + plan.cm * m + plan.cd * d + plan.cmd * (m * d)
        coef = coef.astype(object)
    else:
        coef = (plan.c0.astype(object) + plan.cm.astype(object) * m + plan.cd.astype(object) * d
                + plan.cmd.astype(object) * (m * d))
    values = np.empty(plan.n_entries, dtype=object)
    values[0] = 1  # E[1]
    for lo, hi, dlo, dhi, starts in plan.levels:
        terms = values[plan.dep[dlo:dhi]] * coef[dlo:dhi]
        values[lo:hi] = np.add.reduceat(terms, starts)
    return (d,) + tuple(int(values[i]) for i in plan.single[1:])


class _Plan(NamedTuple):
    n_entries: int
    dep: np.ndarray  # entry ids of the dependencies, grouped by the entry that uses them
    c0: np.ndarray  # coefficient c0 + cm·m + cd·d + cmd·m·d of each dependency
    cm: np.ndarray
    cd: np.ndarray
    cmd: np.ndarray
    levels: tuple  # per degree: entries [lo, hi), dependencies [dlo, dhi), segment starts
    single: tuple  # entry id of (j,) for j = 0 … degree (0: the empty partition)


@lru_cache(maxsize=16)
def _loop_plan(degree: int) -> _Plan:
    """The loop equations of :meth:`_LoopEquations.value` as a dependency table, for every mixed
    moment that E tr W^j, j <= ``degree``, needs (the same expansion on the smallest part)."""

    # Entry μ (smallest part j, the rest ν): its first dependency carries the coefficient that
    # involves m and d, the others a constant:
    #   j > 1: (m + d + j − 1) E[p_ν p_{j−1}] (the r = j − 2 term is p_0 = d)
    #          + Σ_{a+b=j−1, a,b>=1} E[p_ν p_a p_b] + Σ_{distinct a in ν} 2a·#a E[p_{ν∖a} p_{j+a−1}];
    #   j = 1: (m d + 2|ν|) E[p_ν] (every merge p_1 p_a gives p_a back).
    table = {}
    todo = [(j,) for j in range(1, degree + 1)]
    while todo:
        mu = todo.pop()
        if mu in table:
            continue
        j, rest = mu[-1], mu[:-1]
        if j == 1:
            row = [(rest, 2 * sum(rest))]
        else:
            row = [(rest + (j - 1,), j - 1)]
            for a in range(j - 2, j // 2 - 1, -1):  # p_{r+1} p_{j−2−r}: a >= b = j − 1 − a >= 1
                b = j - 1 - a
                row.append((rest + (a, b), 2 if a != b else 1))
            row.extend(_merged_parts(rest, j))
        table[mu] = row
        todo.extend(key for key, _ in row if key and key not in table)
    degree_of = {mu: sum(mu) for mu in table}
    order = [()] + sorted(table, key=degree_of.__getitem__)  # grouped by degree
    ids = {mu: i for i, mu in enumerate(order)}
    rows = [table[mu] for mu in order[1:]]
    sizes = np.array([len(row) for row in rows], dtype=np.intp)
    dep = [ids[key] for row in rows for key, _ in row]
    c0 = [c for row in rows for _, c in row]
    first = np.zeros(len(dep), dtype=bool)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    first[offsets[:-1]] = True
    ones = np.array([mu[-1] == 1 for mu in order[1:]])
    kind = np.zeros(len(dep), dtype=np.int64)
    kind[offsets[:-1]] = np.where(ones, 1, 2)
    degrees = np.array([degree_of[mu] for mu in order[1:]])
    bounds = np.flatnonzero(np.diff(np.concatenate([[0], degrees, [-1]]))) + 1  # entry ids where a degree starts
    levels = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        dlo, dhi = offsets[lo - 1], offsets[hi - 1]
        levels.append((int(lo), int(hi), int(dlo), int(dhi), offsets[lo - 1: hi - 1] - dlo))
    kind = np.array(kind, dtype=np.int64)
    c0 = np.array(c0, dtype=np.int64)
    single = tuple(ids[(j,)] if j else 0 for j in range(degree + 1))
    return _Plan(len(order), np.array(dep, dtype=np.intp), c0, (kind == 2).astype(np.int64),
                 (kind == 2).astype(np.int64), (kind == 1).astype(np.int64), tuple(levels), single)


def mixed_moment(d: int, m: int, powers) -> int:
    """E[tr W^{j_1} ⋯ tr W^{j_ℓ}] exactly (an integer); ``powers`` a sequence of integers >= 0."""
    d, m = _dims(d, m)
    parts = [checks.nonnegative_int(p, "powers") for p in powers]
    if sum(parts) > MAX_DEGREE:
        raise ValueError(f"powers must sum to at most {MAX_DEGREE}, got {sum(parts)}")
    zeros = sum(p == 0 for p in parts)
    key = tuple(sorted((p for p in parts if p > 0), reverse=True))
    return _equations(d, m).value(key) * d**zeros


def narayana_moments(gamma: Fraction, j_max: int) -> list[Fraction]:
    """Moments ∫ λ^j dμ_γ of the Marchenko–Pastur law of ratio γ = d/m (variance 1), exactly.

    ∫ λ^j dμ_γ = Σ_{r=0}^{j−1} γ^r C(j, r) C(j−1, r) / (r + 1) for j >= 1 (Narayana
    polynomials), 1 for j = 0; for γ > 1 this includes the atom of mass 1 − 1/γ at 0. It is the
    d, m → ∞ limit of (1/d) E tr Ŝ^j with Ŝ = W/m. ``gamma`` a positive rational (Fraction or int).
    """
    g = Fraction(gamma)
    if g <= 0:
        raise ValueError(f"gamma must be > 0, got {gamma!r}")
    j_max = checks.nonnegative_int(j_max, "j_max")
    out = [Fraction(1)]
    for j in range(1, j_max + 1):
        out.append(sum(g**r * Fraction(comb(j, r) * comb(j - 1, r), r + 1) for r in range(j)))
    return out


# --------------------------------------------------------------------------- Isserlis expansion


@lru_cache(maxsize=None)
def pairings(r: int):
    """Every pairing of the 2r copies of x in tr(B_1 Ŝ ⋯ B_r Ŝ), as (weight exponent, cycles).

    Half-edge 2t is the column x of factor t (its left side, contracted with B_t), 2t + 1 its
    row xᵀ (right side, contracted with B_{t+1}). Matrix B_t joins half-edge 2t − 1 (row end)
    to 2t (column end). Returns a tuple of (c − r, cycles): c the number of groups of factors
    the pairing joins, and each cycle a tuple of (t, transposed) read in order, the cycle's
    value being tr(Π_t B_t^{(T)} Σ).
    """
    r = checks.positive_int(r, "r")
    if r > MAX_FACTORS + 1:
        raise ValueError(f"r must be <= {MAX_FACTORS + 1}, got {r}")
    n = 2 * r

    def all_pairings(items):
        if not items:
            yield []
            return
        first, rest = items[0], items[1:]
        for i, other in enumerate(rest):
            for tail in all_pairings(rest[:i] + rest[i + 1:]):
                yield [(first, other)] + tail

    out = []
    for pairing in all_pairings(list(range(n))):
        partner = {}
        for a, b in pairing:
            partner[a], partner[b] = b, a
        # groups of factors joined by the pairing (half-edges 2t, 2t+1 belong to factor t)
        parent = list(range(r))

        def find(u):
            while parent[u] != u:
                parent[u] = parent[parent[u]]
                u = parent[u]
            return u

        for a, b in pairing:
            ra, rb = find(a // 2), find(b // 2)
            if ra != rb:
                parent[ra] = rb
        c = len({find(t) for t in range(r)})
        # cycles alternating B-edges and Σ-edges
        seen = [False] * r
        cycles = []
        for t0 in range(r):
            if seen[t0]:
                continue
            cycle = []
            t, node = t0, (2 * t0 - 1) % n  # start at B_t0's row end, walk forward through B_t0
            while True:
                seen[t] = True
                row_end, col_end = (2 * t - 1) % n, 2 * t
                transposed = node != row_end
                cycle.append((t, transposed))
                other = col_end if node == row_end else row_end
                node = partner[other]
                t = (node + 1) // 2 % r  # B-edge touching this half-edge
                if t == t0 and node == (2 * t0 - 1) % n:
                    break
            cycles.append(tuple(cycle))
        out.append((c - r, tuple(cycles)))
    return tuple(out)


def trace_expectation(B, Sigma, m: int) -> float:
    """E tr(B_1 Ŝ B_2 Ŝ ⋯ B_r Ŝ) exactly, Ŝ = (1/m) Σ_{i≤m} x_i x_iᵀ, x_i ~ N(0, Σ) i.i.d.

    ``B`` a sequence of r (d, d) real matrices (any, not necessarily symmetric), 1 <= r <=
    :data:`MAX_FACTORS`; by the Isserlis expansion of the module docstring (cost (2r − 1)!!
    products of r matrices).
    """
    Sigma = checks.covariance(Sigma, "Sigma")
    m = checks.positive_int(m, "m")
    d = Sigma.shape[0]
    mats = [np.asarray(b, dtype=np.float64) for b in B]
    r = len(mats)
    if not 1 <= r <= MAX_FACTORS:
        raise ValueError(f"B must hold between 1 and {MAX_FACTORS} matrices, got {r}")
    for b in mats:
        if b.shape != (d, d) or not np.all(np.isfinite(b)):
            raise ValueError(f"every matrix in B must be a finite {d} x {d} matrix (Sigma is {d} x {d}), got shape {b.shape}")
    # factor 2t is B_t Σ, factor 2t + 1 is B_tᵀ Σ; a cycle's value is the trace of its factors' product
    F = np.stack([f for b in mats for f in (b @ Sigma, b.T @ Sigma)])
    levels, heads, lasts, index, expos = _plan(r)
    # prefix products level by level, each one a batched product of a parent prefix and a factor
    prefix = np.eye(d)[None]
    for parents, factors in levels:
        prefix = np.concatenate([prefix, prefix[parents] @ F[factors]])
    values = np.append(np.einsum("nij,nji->n", prefix[heads], F[lasts]), 1.0)  # last slot: padding
    return float(values[index].prod(axis=1) @ float(m) ** expos)


@lru_cache(maxsize=None)
def _plan(r: int):
    """:func:`pairings` of r factors as arrays for :func:`trace_expectation`.

    A cycle's trace is unchanged by rotation and by reading it backwards with every factor
    transposed (tr(B Σ C Σ) = tr(Cᵀ Σ Bᵀ Σ)), so each cycle is stored once in its smallest form.
    Its trace is tr(H f), H the product of all but its last factor f: the heads are built as a
    tree of prefix products (``levels``: per length, the parent prefix and the factor appended;
    prefix 0 is I). Returns (levels, head of each distinct cycle, its last factor, a (pairings,
    most cycles) index into the distinct cycles padded with a slot holding 1, exponents of m).
    Factor codes: 2t for B_t Σ, 2t + 1 for B_tᵀ Σ.
    """
    def canonical(cyc):
        back = tuple((t, not tr) for t, tr in reversed(cyc))
        return min(c[i:] + c[:i] for c in (cyc, back) for i in range(len(c)))

    rows = [(expo, [canonical(c) for c in cycles]) for expo, cycles in pairings(r)]
    distinct = sorted({c for _, cs in rows for c in cs})
    where = {c: i for i, c in enumerate(distinct)}
    width = max(len(cs) for _, cs in rows)
    index = np.full((len(rows), width), len(distinct), dtype=np.intp)
    for row, (_, cs) in enumerate(rows):
        index[row, : len(cs)] = [where[c] for c in cs]
    expos = np.array([expo for expo, _ in rows], dtype=np.float64)

    def code(f):
        return 2 * f[0] + int(f[1])

    node = {(): 0}
    levels = []
    for length in range(1, max(len(c) for c in distinct)):
        parents, factors = [], []
        for h in sorted({c[:length] for c in distinct if len(c) > length}):
            node[h] = len(node)
            parents.append(node[h[:-1]])
            factors.append(code(h[-1]))
        levels.append((np.array(parents, dtype=np.intp), np.array(factors, dtype=np.intp)))
    heads = np.array([node[c[:-1]] for c in distinct], dtype=np.intp)
    lasts = np.array([code(c[-1]) for c in distinct], dtype=np.intp)
    return tuple(levels), heads, lasts, index, expos


# --------------------------------------------------------------------------- sampling

#: Entropy word that keeps :func:`sample_covariances`' draws apart from other seeded streams.
_SAMPLE_KEY = 0x57495348  # "WISH"


def _merged_parts(rest: tuple, j: int):
    """The loop equation's merge terms: for each distinct part a of ``rest``, the partition with p_j
    and p_a merged into p_{j+a-1} (parts kept in decreasing order) and its coefficient 2a times the
    multiplicity of a.

    ``rest`` is in decreasing order and ``j`` (>= 1) is at most its smallest part, so the merged
    part j + a − 1 >= a goes at or before the position of the a it replaces.
    """
    n, i = len(rest), 0
    while i < n:
        a = rest[i]
        e = i + 1
        while e < n and rest[e] == a:  # the run of equal parts a: its length is a's multiplicity
            e += 1
        merged, pos = j + a - 1, i
        while pos > 0 and rest[pos - 1] < merged:
            pos -= 1
        yield rest[:pos] + (merged,) + rest[pos:i] + rest[i + 1:], 2 * a * (e - i)
        i = e


def sample_covariances(Sigma, m: int, batch: int, *, seed: int = 0, step: int = 0) -> np.ndarray:
    """``batch`` independent sample covariances Ŝ_m = X Xᵀ/m of m features x ~ N(0, Σ); (batch, d, d).

    Drawn from the Wishart law itself rather than from the features: with Σ = L Lᵀ, Ŝ_m =
    L A Aᵀ Lᵀ / m, where for m >= d (Bartlett) A is lower triangular with A_ii² ~ χ²_{m−i+1}
    (i = 1…d) and N(0, 1) entries below the diagonal, and for m < d A is a d × m standard
    Gaussian matrix. For m >= d that is d(d + 1)/2 random numbers per prompt instead of d·m.
    Deterministic in ``(seed, step)`` (numpy's generator, its own stream: not the draws of
    :func:`ttscale.prompts.sample`). ``Sigma`` may be singular. Each returned matrix is exactly
    symmetric.
    """
    Sigma = checks.covariance(Sigma, "Sigma")
    m = checks.positive_int(m, "m")
    batch = checks.positive_int(batch, "batch")
    seed = checks.seed(seed)
    step = checks.nonnegative_int(step, "step")
    d = Sigma.shape[0]
    checks.size(batch * d * max(d, min(m, d)), "batch", "the (batch, d, d) stack of covariances")
    rng = np.random.default_rng(np.random.SeedSequence([seed, _SAMPLE_KEY, step]))
    if m >= d:
        A = np.zeros((batch, d, d))
        rows, cols = np.tril_indices(d, -1)
        A[:, rows, cols] = rng.standard_normal((batch, rows.size))
        diag = np.arange(d)
        A[:, diag, diag] = np.sqrt(rng.chisquare(m - diag, size=(batch, d)))
    else:
        A = rng.standard_normal((batch, d, m))
    lam, U = np.linalg.eigh(Sigma)
    LA = (U * np.sqrt(np.clip(lam, 0.0, None))) @ A
    S = LA @ np.swapaxes(LA, -1, -2) / m
    return (S + np.swapaxes(S, -1, -2)) / 2
