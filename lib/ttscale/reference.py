"""Reference values: the numbers the book checks its computations against, each with its source.

Javanmard, Mirzasoleiman and Mirrokni (arXiv 2510.03605) state their results as theorems and
figures; few numbers are printed. What the book checks against falls in two kinds, and each entry
says which it is:

- ``paper``: a setting or an outcome the paper reports (its section named);
- ``derived``: a number worked out by hand from one of the paper's formulas at the paper's setting
  (d = 20), kept so that a regression in the code that evaluates the formula cannot go unnoticed.

``tests/test_reference.py`` recomputes every derived value from the library, unconditionally (the
values hold at the paper's setting, not at whatever parameters a chapter runs with); the chapters
quote these entries and say whether their own run is at that setting.
"""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = ["Reference", "HARDNESS_POWER_LAW", "MISSING_SKILLS", "SKEWED_U_SHAPE", "ISO_ERROR_FRONTIER",
           "FOUR_TASK_TYPES", "SELECTION_ORDER", "GPT2_PAPER_SCALE", "GPT2_TRAIN_LENGTHS", "ALL"]


class Reference(NamedTuple):
    """One reference value: what it is, the setting it holds in, and where it comes from."""

    value: Any
    setting: dict
    kind: str  # "paper" or "derived"
    source: str


#: Hard(Λ) = tr Λ / λ_min Λ of the power law λ_i ∝ i^−α, d = 20, at α = 0.2, 0.5, 0.8, 1.0 (two decimals).
HARDNESS_POWER_LAW = Reference(
    {0.2: 24.16, 0.5: 33.97, 0.8: 51.75, 1.0: 71.95}, {"d": 20}, "derived",
    "paper Section 3 (the hardness measure and the power-law family), evaluated by hand")

#: Σ = I, m → ∞, Λ = diag(1 × 15, 0 × 5): E‖ŵ_k − w‖² for k = 0…3 (two decimals) and the
#: largest n that does not overthink (n > 30 overthinks).
MISSING_SKILLS = Reference(
    {"errors": {10: [20.0, 6.24, 2.21, 0.82], 40: [20.0, 15.11, 38.68, 107.18]}, "last_stable_n": 30},
    {"d": 20, "r": 5}, "derived",
    "paper Remark 4.1 and Section 5 (overthinking when skills are missing), the error formula by hand")

#: λ_i ∝ 1/i with tr Λ = d, Σ = I, m → ∞, n = 100: the error is U-shaped in k, smallest at k = 5.
SKEWED_U_SHAPE = Reference(
    {"n_train": 100, "best_k": 5, "min_error": 4.65, "error_at_20": 24.06}, {"d": 20, "alpha": 1.0},
    "derived", "paper Section 5 (overthinking under a skewed training spectrum), evaluated by hand")

#: Λ = I, m → ∞, target error 1: the smallest training length n* reaching it in k steps.
ISO_ERROR_FRONTIER = Reference(
    {1: 73, 2: 24, 3: 14, 5: 8, 10: 4, 20: 2}, {"d": 20, "target": 1.0}, "derived",
    "paper Corollary 3.5 and Figure 2's trade-off, the in-distribution error (1 + n/(d + 1))^(-2k) d by hand")

#: The paper's four training task types: (spectral decay α, prompt length) of each.
FOUR_TASK_TYPES = Reference(
    {"Easy-Short": (0.2, 20), "Hard-Short": (0.8, 20), "Easy-Long": (0.2, 100), "Hard-Long": (0.8, 100)},
    {"d": 20}, "paper", "paper Section 4 (task selection experiment)")

#: The order of the average selection probabilities the paper reports, highest first.
SELECTION_ORDER = Reference(
    ["Hard-Long", "Hard-Short", "Easy-Long", "Easy-Short"], {"d": 20}, "paper",
    "paper Section 4 (task selection experiment); at least half the mass on hard tasks is its Proposition 4.3")

#: The paper's GPT-2: 12 layers, 8 heads, width 256 (about 9.5M parameters).
GPT2_PAPER_SCALE = Reference({"n_layer": 12, "n_head": 8, "width": 256}, {}, "paper",
                             "paper, the GPT-2 experiments (nonlinear transformers)")

#: The in-distribution training prompt lengths of the paper's GPT-2 experiment.
GPT2_TRAIN_LENGTHS = Reference([20, 30, 40], {"d": 20}, "paper", "paper, the GPT-2 experiments (nonlinear transformers)")

#: Every reference, by name.
ALL = {name: value for name, value in dict(globals()).items() if isinstance(value, Reference)}


def applies(ref: Reference, **parameters) -> bool:
    """Whether a run's ``parameters`` are at the setting ``ref`` holds in (every key it names agrees)."""
    return all(k in parameters and parameters[k] == v for k, v in ref.setting.items())


__all__.append("applies")
