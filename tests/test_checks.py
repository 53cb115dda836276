import numpy as np
import pytest

from ttscale import checks


@pytest.mark.parametrize("bad", [0, -1, 2.0, 2.5, "3", True, None])
def test_positive_int_rejects(bad):
    with pytest.raises(ValueError, match="n_train must be an integer >= 1"):
        checks.positive_int(bad, "n_train")


def test_positive_int_accepts_numpy_ints():
    assert checks.positive_int(np.int64(3), "n") == 3


@pytest.mark.parametrize("bad", [-1, 1.0, [1, -2], np.array([0.5]), True])
def test_steps_rejects(bad):
    with pytest.raises(ValueError, match="k must"):
        checks.steps(bad, "k")


def test_steps_shapes():
    assert checks.steps(3).ndim == 0
    assert checks.steps([0, 1, 2]).shape == (3,)


@pytest.mark.parametrize(
    "matrix, rule",
    [
        (np.ones((2, 3)), "square"),
        (np.array([[1.0, 2.0], [0.0, 1.0]]), "symmetric"),
        (np.array([[1.0, 0.0], [0.0, -1.0]]), "positive semi-definite"),
        (np.array([[1.0, np.nan], [np.nan, 1.0]]), "finite"),
        (np.array([[1.0, np.inf], [np.inf, 1.0]]), "finite"),
        (np.zeros((0, 0)), "non-empty"),
    ],
)
def test_covariance_rules(matrix, rule):
    with pytest.raises(ValueError, match=rule) as info:
        checks.covariance(matrix, "Sigma")
    assert "Sigma" in str(info.value)


def test_covariance_definite_and_dimension():
    singular = np.diag([1.0, 0.0])
    checks.covariance(singular)  # PSD is fine
    with pytest.raises(ValueError, match="positive definite"):
        checks.covariance(singular, definite=True)
    with pytest.raises(ValueError, match="3 x 3"):
        checks.covariance(np.eye(2), "Sigma", d=3)


@pytest.mark.parametrize("d", [2, 30])
def test_covariance_tolerance_boundary_is_the_documented_one(d):
    # Smallest eigenvalue just inside / just outside -PSD_RTOL * scale (semi-definite) and
    # +PSD_RTOL * scale (definite), in a rotated basis so that no diagonal is read off directly.
    Q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((d, d)))
    t = checks.PSD_RTOL  # scale is max |entry|, about 1 here

    def rotated(lam_min):
        lam = np.linspace(1.0, 2.0, d)
        lam[0] = lam_min
        a = (Q * lam) @ Q.T
        return (a + a.T) / 2, np.abs(a).max()

    a, scale = rotated(-0.5 * t)
    checks.covariance(a)
    a, scale = rotated(-3 * t * 2.0)
    with pytest.raises(ValueError, match="positive semi-definite, but its smallest eigenvalue is -"):
        checks.covariance(a)
    a, scale = rotated(3 * t * 2.0)
    checks.covariance(a, definite=True)
    a, scale = rotated(0.5 * t)
    with pytest.raises(ValueError, match="positive definite .invertible. here"):
        checks.covariance(a, definite=True)
    checks.covariance(a)  # ... and still semi-definite
    # The returned matrix is the symmetrised input, not the jittered copy used by the check.
    a, _ = rotated(0.0)
    assert np.array_equal(checks.covariance(a), (a + a.T) / 2)


@pytest.mark.parametrize("bad", [np.nan, np.inf, "x", True])
def test_finite_real(bad):
    with pytest.raises(ValueError, match="lr must"):
        checks.finite_real(bad, "lr")


def test_positive_real_and_one_of():
    with pytest.raises(ValueError, match="lr must be > 0"):
        checks.positive_real(0.0, "lr")
    with pytest.raises(ValueError, match="stream must be one of"):
        checks.one_of("x", ("a", "b"), "stream")


def test_the_maths_imports_no_book_machinery():
    # the mathematics and models must install and import without papermill, myst-nb, jupytext or Dask
    import subprocess
    import sys

    code = ("import importlib, pkgutil, sys, ttscale\n"
            "for m in pkgutil.iter_modules(ttscale.__path__):\n"
            "    if m.name != '__main__':\n"
            "        importlib.import_module('ttscale.' + m.name)\n"
            "bad = [m for m in ('papermill', 'myst_nb', 'jupytext', 'distributed', 'dask', 'yaml', 'nbformat', 'ttbook')\n"
            "       if m in sys.modules]\n"
            "print(len(list(pkgutil.iter_modules(ttscale.__path__))), ','.join(bad))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    count, _, bad = out.stdout.strip().partition(" ")
    assert int(count) >= 10 and bad == "", f"the maths imported {bad}"


@pytest.mark.parametrize("dtype", ["float64", "float32", "complex128"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", [0, 777, -1])
def test_tensor_refuses_any_non_finite_entry(dtype, bad, where):
    import torch

    x = torch.zeros(3, 20, 40, dtype=getattr(torch, dtype))
    checks.tensor(x, "X")  # all finite
    x.view(-1)[where] = bad
    with pytest.raises(ValueError, match="X must have finite entries"):
        checks.tensor(x, "X")


def test_tensor_accepts_empty_and_extremes():
    import torch

    checks.tensor(torch.zeros(0, 3), "X")
    big = torch.tensor([np.finfo(np.float64).max, -np.finfo(np.float64).max, 0.0])
    assert checks.tensor(big, "X") is not None
