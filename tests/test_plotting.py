import pytest

from ttscale import plotting


@pytest.mark.parametrize("group", [(8, 12, 16), (10, 20, 30), (10, 20, 40, 100), (20, 50, 100, 200),
                                   (10, 20, 30, 40, 60)])
def test_lengths_that_share_a_figure_get_distinct_colours(group):
    colours = [plotting.n_train_color(n) for n in group]
    assert len(set(colours)) == len(group)
    assert plotting.TRIVIAL_STYLE["color"] not in colours


def test_same_length_same_colour_and_nearest_anchor():
    import seaborn as sns

    palette = sns.color_palette("colorblind", 10)
    assert plotting.n_train_color(20) == palette[1] and plotting.n_train_color(10) == palette[0]  # the table's entries
    assert plotting.n_train_color(21) == plotting.n_train_color(20)
    assert plotting.n_train_color(1000) == plotting.n_train_color(400)


def test_series_colours_avoid_the_orange_twins_below_nine():
    import seaborn as sns

    palette = sns.color_palette("colorblind", 10)
    colours = plotting.series_colors(8)
    assert len(set(colours)) == 8
    assert not (palette[1] in colours and palette[3] in colours)
