"""Every derived reference value, recomputed from the library at its own setting (not a chapter's)."""

import numpy as np
import pytest

from ttscale import covariances, gpt2, reference as ref, simulation, theory


def test_hardness_of_the_power_law():
    r = ref.HARDNESS_POWER_LAW
    for alpha, H in r.value.items():
        assert round(theory.hardness(covariances.power_law(r.setting["d"], alpha)), 2) == H


def test_missing_skills_errors_and_threshold():
    r = ref.MISSING_SKILLS
    d, k = r.setting["d"], r.setting["r"]
    Lam, I = covariances.missing_skills(d, k), np.eye(d)
    for n, values in r.value["errors"].items():
        np.testing.assert_allclose(theory.cot_error(Lam, n, np.arange(4), Sigma=I), values, atol=0.005)
    assert theory.critical_n_train(Lam, I) == r.value["last_stable_n"] + 1


def test_skewed_training_is_u_shaped():
    r, v = ref.SKEWED_U_SHAPE, ref.SKEWED_U_SHAPE.value
    e = theory.cot_error(covariances.power_law(r.setting["d"], r.setting["alpha"]), v["n_train"], np.arange(21),
                         Sigma=np.eye(r.setting["d"]))
    assert simulation.best_k(e) == v["best_k"]
    assert abs(e[v["best_k"]] - v["min_error"]) < 0.005 and abs(e[20] - v["error_at_20"]) < 0.005


def test_iso_error_frontier():
    r = ref.ISO_ERROR_FRONTIER
    ks = list(r.value)
    got = theory.smallest_n_train(np.eye(r.setting["d"]), ks, r.setting["target"])
    assert [int(n) for n in got] == list(r.value.values())


def test_paper_settings_are_the_ones_the_library_uses():
    assert {k: getattr(gpt2.config_for(8, "paper"), k) for k in ("n_layer", "n_head", "width")} == ref.GPT2_PAPER_SCALE.value
    assert sorted(ref.SELECTION_ORDER.value) == sorted(ref.FOUR_TASK_TYPES.value)
    assert set(ref.ALL) >= {"HARDNESS_POWER_LAW", "MISSING_SKILLS", "FOUR_TASK_TYPES"}
    assert all(r.kind in ("paper", "derived") and r.source.startswith("paper") for r in ref.ALL.values())


def test_applies():
    assert ref.applies(ref.MISSING_SKILLS, d=20, r=5, k_max=3)
    assert not ref.applies(ref.MISSING_SKILLS, d=20, r=4)
    assert not ref.applies(ref.MISSING_SKILLS, d=20)
    with pytest.raises(TypeError):
        ref.applies(ref.MISSING_SKILLS, 20)
