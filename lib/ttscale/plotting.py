"""One figure style for the whole book: seaborn theme, fixed colours per n_train and per k.

A reader comparing figures across chapters sees the same colour for the same training
prompt length everywhere. Used in every chapter.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

__all__ = ["set_style", "n_train_color", "k_color", "series_colors", "TRIVIAL_STYLE"]

#: The reference line for the trivial predictor ŵ = 0 (error d).
TRIVIAL_STYLE = dict(color="0.45", linestyle=":", linewidth=1.2)

_N_TRAIN_ANCHORS = (5, 10, 20, 30, 40, 50, 73, 100, 200, 400)


def set_style() -> None:
    """Apply the book's seaborn theme (call once at the top of a chapter)."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind", font_scale=0.95)
    plt.rcParams.update({"figure.figsize": (6.4, 3.8), "figure.dpi": 110, "savefig.bbox": "tight",
                         "axes.titlesize": "medium", "legend.frameon": False})


def n_train_color(n: int):
    """The colour of a training prompt length n (same n, same colour in every chapter)."""
    palette = sns.color_palette("colorblind", len(_N_TRAIN_ANCHORS))
    idx = int(np.argmin([abs(np.log(n) - np.log(a)) for a in _N_TRAIN_ANCHORS]))
    return palette[idx]


def k_color(k: int, k_max: int = 20):
    """The colour of a number of CoT steps k on a sequential scale up to ``k_max``."""
    return sns.color_palette("rocket_r", as_cmap=True)(0.15 + 0.8 * min(k, k_max) / max(k_max, 1))


def series_colors(n: int):
    """``n`` distinct colours for unordered series (methods, task types)."""
    return sns.color_palette("colorblind", n)
