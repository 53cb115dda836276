import numpy as np
import pytest

from ttscale import covariances as cv
from ttscale import theory


def test_power_law_spectrum_normalisations():
    lam = cv.power_law_spectrum(20, 1.0)
    assert np.isclose(lam.sum(), 20)
    assert np.all(np.diff(lam) < 0)
    assert np.allclose(lam[0] / lam, np.arange(1, 21))  # λ_1/λ_i = i^α
    lam_max = cv.power_law_spectrum(20, 1.0, normalise="max")
    assert lam_max[0] == 1.0 and np.allclose(lam_max, 1 / np.arange(1, 21))
    assert np.allclose(cv.power_law_spectrum(5, 0.0), 1.0)


def test_hardness_of_the_power_law_in_closed_form():
    # Hard = sum(i^-a) * d^a for lambda_i proportional to i^-a (the paper's values: tests/test_reference.py)
    for alpha in [0.0, 0.2, 0.5, 0.8, 1.0, 2.0]:
        direct = (np.arange(1, 21) ** -alpha).sum() * 20**alpha
        assert np.isclose(theory.hardness(cv.power_law(20, alpha)), direct)


def test_rotation_is_orthogonal_seeded_and_preserves_spectrum():
    U = cv.random_rotation(8, seed=3)
    assert np.allclose(U.T @ U, np.eye(8))
    assert np.array_equal(U, cv.random_rotation(8, seed=3))
    assert not np.allclose(U, cv.random_rotation(8, seed=4))
    L = cv.power_law(8, 0.7, rotate=True, seed=3)
    assert np.allclose(cv.spectrum(L), cv.power_law_spectrum(8, 0.7))
    assert not np.allclose(L, np.diag(np.diag(L)))


def test_rotation_haar_first_moment():
    # For Haar U, E[U_11^2] = 1/d: average over seeds.
    vals = [cv.random_rotation(4, s)[0, 0] ** 2 for s in range(2000)]
    assert abs(np.mean(vals) - 0.25) < 0.02


def test_missing_skills():
    L = cv.missing_skills(20, 5)
    assert np.allclose(np.diag(L), [1.0] * 15 + [0.0] * 5)
    with pytest.raises(ValueError, match="r \\(missing skills\\) must be < d"):
        cv.missing_skills(5, 5)
    with pytest.raises(ValueError, match="r must be an integer >= 0"):
        cv.missing_skills(5, -1)


def test_bad_inputs():
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        cv.power_law(5, -0.5)
    with pytest.raises(ValueError, match="normalise must be one of"):
        cv.power_law(5, 0.5, normalise="sum")
    with pytest.raises(ValueError, match="d must be an integer >= 1"):
        cv.identity(0)
    with pytest.raises(ValueError, match="eigenvalues must be >= 0"):
        cv.from_spectrum([1.0, -1.0])
    with pytest.raises(ValueError, match="U must be orthogonal"):
        cv.from_spectrum([1.0, 2.0], np.ones((2, 2)))
    with pytest.raises(ValueError, match="rotate must be True or False"):
        cv.power_law(4, 0.5, rotate="yes")
