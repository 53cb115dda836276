"""The Sphinx extension that ties each page to its code: footer, source archive, citation labels."""

import re
from types import SimpleNamespace

import pytest

from ttbook import __version__, chapters, sphinx_book

pybtex = pytest.importorskip("pybtex")


def test_build_info_reads_git_and_fails_soft(tmp_path):
    info = sphinx_book.build_info(chapters.ROOT)
    if info["commit"] != "unknown":  # a checkout: a full hash
        assert re.fullmatch(r"[0-9a-f]{40}", info["commit"]) and info["short"] == info["commit"][:10]
    assert info["version"] == __version__
    outside = sphinx_book.build_info(tmp_path)
    assert outside["commit"] == "unknown" and outside["dirty"] is False


def test_footer_names_version_commit_source_and_citation():
    info = {"version": "9.9", "commit": "a" * 40, "short": "a" * 10, "dirty": True}
    plain = sphinx_book.footer_html(info)
    assert "ttscale 9.9" in plain and "aaaaaaaaaa + local changes" in plain
    assert "ttscale-source.tar.gz" in plain and "references.html#sec-how-to-cite" in plain
    assert "tree/" not in plain
    linked = sphinx_book.footer_html(info, "https://example.org/book")
    assert f'href="https://example.org/book/tree/{"a" * 40}"' in linked


def test_only_a_configured_repository_url_counts():
    assert sphinx_book.source_url({}) == ""
    assert sphinx_book.source_url({"repository_url": "https://github.com/executablebooks/jupyter-book"}) == ""
    assert sphinx_book.source_url({"repository_url": "https://example.org/x/"}) == "https://example.org/x"


def _entry(authors, year="2020"):
    from pybtex.database import Entry, Person

    return Entry("article", fields={"title": "T", "year": year},
                 persons={"author": [Person(a) for a in authors]})


def test_author_year_labels_follow_the_text():
    assert sphinx_book.author_year_label(_entry(["Smith, Ann"])) == "Smith, 2020"
    assert sphinx_book.author_year_label(_entry(["Smith, Ann", "Jones, Bob"])) == "Smith and Jones, 2020"
    assert sphinx_book.author_year_label(_entry(["Smith, A", "Jones, B", "Wu, C"])) == "Smith et al., 2020"
    assert sphinx_book.author_year_label(_entry(["von Oswald, Johannes", "B, C", "D, E"])) == "von Oswald et al., 2020"
    assert sphinx_book.author_year_label(_entry(["Mar{\\v{c}}enko, V. A.", "Pastur, L."])) == "Marčenko and Pastur, 2020"


def test_clashing_labels_get_letters():
    style = sphinx_book.AuthorYearLabelStyle()
    labels = list(style.format_labels([_entry(["Smith, A", "B, C", "D, E"]), _entry(["Smith, X", "Y, Z", "Q, R"]),
                                       _entry(["Lee, K"])]))
    assert labels == ["Smith et al., 2020a", "Smith et al., 2020b", "Lee, 2020"]


def test_the_books_bibliography_is_labelled_as_cited():
    from pybtex.database import parse_file
    from pybtex.plugin import find_plugin

    sphinx_book.setup(SimpleNamespace(connect=lambda *a, **k: None))
    style = find_plugin("pybtex.style.formatting", "ttbook")()
    bib = parse_file(str(chapters.ROOT / "references.bib"))
    labels = {e.key: e.label for e in style.format_entries(bib.entries.values())}
    assert labels["javanmard2026tts"] == "Javanmard et al., 2025"
    assert len(set(labels.values())) == len(labels)


def test_citation_file_matches_the_package():
    yaml = pytest.importorskip("yaml")
    cff = yaml.safe_load((chapters.ROOT / "CITATION.cff").read_text())
    assert str(cff["version"]) == __version__ and cff["license"] == "MIT"
    assert "MIT License" in (chapters.ROOT / "LICENSE").read_text()
    assert 'license = "MIT"' in (chapters.ROOT / "pyproject.toml").read_text()


def test_source_archive_holds_what_installs_the_code(tmp_path):
    import tarfile

    archive = sphinx_book.write_source_archive(chapters.ROOT, tmp_path / "src.tar.gz")
    names = tarfile.open(archive).getnames()
    assert {"ttscale/pyproject.toml", "ttscale/README.md", "ttscale/lib/ttscale/theory.py",
            "ttscale/book/intro.md"} <= set(names)
    assert not any(n.startswith(("ttscale/_build/", "ttscale/.venv/", "ttscale/_static/mathjax/")) for n in names)
    assert archive.stat().st_size < 5_000_000


def test_source_files_outside_git_walk_the_tree(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "a.py").write_text("x = 1\n")
    (tmp_path / "_build").mkdir()
    (tmp_path / "_build" / "b.html").write_text("")
    assert sphinx_book.source_files(tmp_path) == ["lib/a.py"]
