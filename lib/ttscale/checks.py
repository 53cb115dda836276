"""Argument validation shared by every public ``ttscale`` function.

Each helper either returns a cleaned value or raises :class:`ValueError` whose
message names the offending argument and the rule it broke, so a chapter run with
a nonsensical parameter stops at its first cell with a sentence a reader can act
on instead of a numpy traceback.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = [
    "covariance",
    "positive_int",
    "nonnegative_int",
    "steps",
    "finite_real",
    "positive_real",
    "seed",
    "same_dim",
    "one_of",
    "finite_array",
    "tensor",
    "size",
    "MAX_ELEMENTS",
]

#: The largest array (number of float64 entries, 2 GiB) a public function will allocate: far
#: beyond anything the book needs, well inside the 24 GiB of the machines it runs on. Requests
#: beyond it are refused up front with a ValueError instead of a MemoryError or a long hang.
MAX_ELEMENTS = 2**28

#: Relative tolerance (times the largest |entry|) for symmetry and for negative eigenvalues.
SYM_RTOL = 1e-8
PSD_RTOL = 1e-10


def _is_int(x) -> bool:
    return isinstance(x, (numbers.Integral, np.integer)) and not isinstance(x, (bool, np.bool_))


def positive_int(value, name: str) -> int:
    """Return ``value`` as an ``int`` if it is an integer >= 1, else raise ``ValueError``."""
    if not _is_int(value) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def nonnegative_int(value, name: str) -> int:
    """Return ``value`` as an ``int`` if it is an integer >= 0, else raise ``ValueError``."""
    if not _is_int(value) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return int(value)


def steps(value, name: str = "k") -> np.ndarray:
    """Validate a number of steps, or an array of them: non-negative integers.

    Returns an integer array (0-d for a scalar input). Floats with integral value
    (``3.0``) are refused: a step count is a count.
    """
    arr = np.asarray(value)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be a non-negative integer or an array of them, got {value!r}")
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} must be non-negative, got minimum {int(arr.min())}")
    return arr.astype(np.int64)


def finite_real(value, name: str) -> float:
    """Return ``value`` as a float if it is a finite real number."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def positive_real(value, name: str) -> float:
    """Return ``value`` as a float if it is a finite real number > 0."""
    v = finite_real(value, name)
    if v <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return v


def seed(value, name: str = "seed") -> int:
    """A seed is a non-negative integer (so that a rerun draws the same numbers)."""
    return nonnegative_int(value, name)


def one_of(value, options, name: str):
    """Return ``value`` if it is one of ``options``."""
    if value not in options:
        raise ValueError(f"{name} must be one of {sorted(options)!r}, got {value!r}")
    return value


def covariance(matrix, name: str = "Lam", *, definite: bool = False, d: int | None = None) -> np.ndarray:
    """Validate a covariance matrix and return it as a float64 array.

    Rules: a 2-d square array of finite reals, symmetric (relative tolerance
    ``SYM_RTOL``), positive semi-definite (eigenvalues >= -``PSD_RTOL`` * scale),
    and, with ``definite=True``, positive definite (smallest eigenvalue > ``PSD_RTOL`` * scale).
    With ``d`` given, the matrix must be d x d.
    """
    try:
        a = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a square matrix of real numbers") from None
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty square matrix, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must have finite entries (no NaN or inf)")
    if d is not None and a.shape[0] != d:
        raise ValueError(f"{name} must be {d} x {d} to match the dimension d = {d}, got {a.shape[0]} x {a.shape[1]}")
    scale = max(np.abs(a).max(), np.finfo(float).tiny)
    if np.abs(a - a.T).max() > SYM_RTOL * scale:
        raise ValueError(f"{name} must be symmetric (max |{name} - {name}^T| = {np.abs(a - a.T).max():.3g})")
    a = (a + a.T) / 2
    # Fast path: the rule "smallest eigenvalue >= -t" (or "> t" when definite), t = PSD_RTOL * scale,
    # holds iff a + t I (or a - t I) is positive definite, which one Cholesky factorisation (about a
    # tenth of an eigvalsh) confirms. Only a matrix it rejects pays for the eigenvalues, which decide
    # exactly as before (so a factorisation lost to rounding at the boundary refuses nothing) and
    # give the message its smallest eigenvalue.
    shifted = a.copy()
    shifted.flat[:: a.shape[0] + 1] += -PSD_RTOL * scale if definite else PSD_RTOL * scale
    if _cholesky_ok(shifted):
        return a
    lam_min = np.linalg.eigvalsh(a)[0]
    if lam_min < -PSD_RTOL * scale:
        raise ValueError(f"{name} must be positive semi-definite, but its smallest eigenvalue is {lam_min:.3g}")
    if definite and lam_min <= PSD_RTOL * scale:
        raise ValueError(
            f"{name} must be positive definite (invertible) here, but its smallest eigenvalue is {lam_min:.3g}"
        )
    return a


def _cholesky_ok(a: np.ndarray) -> bool:
    """Whether LAPACK's Cholesky factorisation of the symmetric ``a`` succeeds (``a`` is overwritten)."""
    from scipy.linalg import lapack

    _, info = lapack.dpotrf(a.T, lower=1, clean=0, overwrite_a=1)  # a.T: Fortran order, no copy
    return info == 0


def same_dim(d_expected: int, d_actual: int, name: str) -> None:
    """Raise unless two dimensions agree."""
    if d_expected != d_actual:
        raise ValueError(f"{name} has dimension {d_actual}, but d = {d_expected} was expected")


def size(n_elements, name: str, what: str = "the arrays this call needs") -> None:
    """Refuse a request whose largest array would hold more than :data:`MAX_ELEMENTS` entries."""
    if n_elements > MAX_ELEMENTS:
        raise ValueError(f"{name} is too large: {what} would hold {float(n_elements):.3g} entries, "
                         f"more than the cap of {MAX_ELEMENTS:.3g} (2 GiB of float64)")


def finite_array(value, name: str, *, ndim: int | None = None) -> np.ndarray:
    """``value`` as a float64 numpy array (from a list, array or tensor) with finite entries."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an array of real numbers") from None
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must have finite entries (no NaN or inf)")
    return a


def tensor(value, name: str, *, ndim: int | None = None, dtype=None):
    """``value`` as a torch tensor (numpy arrays and lists are accepted) with finite entries.

    Keeps a tensor's dtype unless ``dtype`` is given; numpy input becomes float64.
    """
    import torch

    if not isinstance(value, torch.Tensor):
        try:
            value = torch.as_tensor(np.asarray(value, dtype=np.float64))
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a tensor or array of real numbers") from None
    if dtype is not None:
        value = value.to(dtype)
    if not (value.dtype.is_floating_point or value.dtype.is_complex):
        value = value.to(torch.float64)
    if ndim is not None and value.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {tuple(value.shape)}")
    if not _finite_tensor(value):
        raise ValueError(f"{name} must have finite entries (no NaN or inf)")
    return value


def _finite_tensor(value) -> bool:
    """Whether every entry of a tensor is finite. For real tensors one reduction: the smallest and
    largest entries are finite iff every entry is (both propagate NaN, an inf is an extreme), and
    ``aminmax`` allocates no boolean mask (``isfinite(x).all()`` cost 20 times more on prompts)."""
    import torch

    if value.numel() == 0:
        return True
    if value.dtype.is_complex:
        return bool(torch.isfinite(value).all())
    lo, hi = torch.aminmax(value)
    return bool(torch.isfinite(lo) & torch.isfinite(hi))
