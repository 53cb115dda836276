"""One figure style for the whole book: seaborn theme, fixed colours per n_train and per k.

A reader comparing figures across chapters sees the same colour for the same training
prompt length everywhere.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

__all__ = ["set_style", "n_train_color", "k_color", "series_colors", "TRIVIAL_STYLE"]

#: The reference line for the trivial predictor ŵ = 0 (error d).
TRIVIAL_STYLE = dict(color="0.45", linestyle=":", linewidth=1.2)

#: Usual training lengths -> index into seaborn's 10-colour "colorblind" palette, chosen so that
#: the lengths that share a figure in this book ({8, 12, 16}, {10, 20, 30}, {10, 20, 40, 100},
#: {20, 50, 100, 200}, {10, 20, 30, 40, 60}) never share a colour; grey (7) is left to the
#: trivial-error line.
_N_TRAIN_COLOUR = {4: 3, 5: 9, 8: 0, 10: 0, 12: 1, 15: 4, 16: 2, 20: 1, 25: 5, 30: 2, 40: 3, 50: 4,
                   60: 5, 73: 6, 80: 6, 100: 8, 150: 9, 200: 9, 300: 6, 400: 5}


def set_style() -> None:
    """Apply the book's seaborn theme (call once at the top of a chapter)."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind", font_scale=0.95)
    plt.rcParams.update({"figure.figsize": (6.4, 3.8), "figure.dpi": 110, "savefig.bbox": "tight",
                         "axes.titlesize": "medium", "legend.frameon": False})


def n_train_color(n: int):
    """The colour of a training prompt length n (same n, same colour in every chapter).

    The usual lengths (4 … 400) own a colour each (``_N_TRAIN_COLOUR``); other lengths take
    the colour of the nearest usual one on a log scale.
    """
    anchors = np.array(sorted(_N_TRAIN_COLOUR))
    nearest = int(anchors[np.argmin(np.abs(np.log(anchors) - np.log(max(n, 1))))])
    return sns.color_palette("colorblind", 10)[_N_TRAIN_COLOUR[nearest]]


def k_color(k: int, k_max: int = 20):
    """The colour of a number of CoT steps k on a sequential scale up to ``k_max``."""
    return sns.color_palette("rocket_r", as_cmap=True)(0.15 + 0.8 * min(k, k_max) / max(k_max, 1))


#: The colorblind palette reordered so that its two near-twins, orange (1) and vermillion (3),
#: only meet when a figure has nine or more series.
_SERIES_ORDER = (0, 2, 4, 1, 8, 9, 5, 6, 3, 7)


def series_colors(n: int):
    """``n`` distinct colours for unordered series (methods, task types)."""
    n = int(n)
    palette = sns.color_palette("colorblind", 10)
    return [palette[_SERIES_ORDER[i % 10]] for i in range(n)]
