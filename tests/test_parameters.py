"""Reading a chapter's parameters cell and checking values typed by a user."""

import math

import pytest

from ttbook import parameters as P

CELL = '''\
d = 20  # feature dimension
n_train = [10, 20]  # training prompt lengths
# learning rate of Adam,
# before warm-up
lr = 1e-3
name = "iso"
flag = False  # a switch
free = None
'''


def test_describe_source_reads_defaults_and_meanings():
    ps = P.describe_source(CELL, smoke={"d": 4})
    assert [p.name for p in ps] == ["d", "n_train", "lr", "name", "flag", "free"]
    by = {p.name: p for p in ps}
    assert by["d"].default == 20 and by["d"].meaning == "feature dimension"
    assert by["d"].has_smoke and by["d"].smoke == 4 and not by["lr"].has_smoke
    assert by["n_train"].meaning == "training prompt lengths"
    assert by["lr"].meaning == "learning rate of Adam, before warm-up"
    assert by["name"].meaning == "" and by["flag"].meaning == "a switch"


def test_describe_source_rejects_non_literals():
    with pytest.raises(ValueError, match="'x' must be assigned a plain literal"):
        P.describe_source("x = 2 * y\n")


def test_describe_intro_has_d_and_seed():
    by = {p.name: p for p in P.describe("intro")}
    assert isinstance(by["d"].default, int) and isinstance(by["seed"].default, int)
    assert by["d"].meaning  # every chapter documents its knobs with a trailing comment


@pytest.mark.parametrize("default, text, expected", [
    (20, "40", 40), (20, " 7 ", 7), (0.5, "1", 1.0), (0.5, "1e-3", 1e-3), (0.5, "-inf", -math.inf),
    (True, "false", False), (True, "TRUE", True), (False, "yes", True),
    ("iso", "skewed", "skewed"), ("iso", "'a b'", "a b"), ("iso", "12", "12"),
    ([10, 20], "[1, 2, 3]", [1, 2, 3]), ([0.1, 0.2], "[1, 0.5]", [1.0, 0.5]), ([], "['x']", ["x"]),
    (None, "abc", "abc"), (None, "3", 3),
])
def test_parse_accepts_values_of_the_default_type(default, text, expected):
    value = P.parse("p", default, text)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("default, text", [
    (20, "2.5"), (20, "abc"), (20, "True"), (20, "[1]"), (0.5, "x"), (0.5, "true"),
    (True, "maybe"), (True, "1"), (False, "0"), ([10, 20], "10"), ([10, 20], "[1, 2.5]"), ("iso", ["a"]),
])
def test_parse_rejects_the_wrong_type(default, text):
    with pytest.raises(ValueError, match=r"parameter 'p' must be an? "):
        P.parse("p", default, text)


def test_int_is_accepted_for_float_but_float_not_for_int():
    assert P.check("lr", 0.1, 2) == 2.0 and isinstance(P.check("lr", 0.1, 2), float)
    with pytest.raises(ValueError, match=r"parameter 'd' must be an int \(default 20\), got 2.0"):
        P.check("d", 20, 2.0)


def test_resolve_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown parameter 'dd' for chapter 'intro' \(did you mean 'd'\?\); "
                                         r"valid parameters: d, .*seed"):
        P.resolve("intro", {"dd": "3"})
    with pytest.raises(ValueError, match=r"unknown parameter 'zzz' for chapter 'intro'; valid"):  # nothing close
        P.resolve("intro", {"zzz": "3"})


def test_resolve_smoke_then_overrides():
    smoke = P.resolve("intro", smoke=True)
    assert smoke and all(k in {p.name for p in P.describe("intro")} for k in smoke)
    out = P.resolve("intro", {"seed": "3"}, smoke=True)
    assert out == {**smoke, "seed": 3}


@pytest.mark.parametrize("text, expected", [
    ("10,20,40", ["10", "20", "40"]), ("7", ["7"]), (" 1 , 2 ", ["1", "2"]),
    ("[1,2],[3]", ["[1,2]", "[3]"]), ("'a,b',c", ["'a,b'", "c"]),
])
def test_split_values(text, expected):
    assert P.split_values(text) == expected


def test_split_values_rejects_empty():
    with pytest.raises(ValueError, match="empty value"):
        P.split_values("1,,2")
