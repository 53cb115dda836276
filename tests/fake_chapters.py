"""Pieces of the small, made-up chapters that tests build books from."""

#: the front matter every chapter of the book starts with (jupytext MyST, Python 3 kernel)
HEADER = '''jupytext:
  text_representation:
    extension: .md
    format_name: myst
    format_version: 0.13
kernelspec:
  display_name: Python 3
  language: python
  name: python3
'''


def front_matter(extra: str = "") -> str:
    """``---``-fenced front matter: :data:`HEADER` and any further YAML lines (``extra``)."""
    return "---\n" + HEADER + extra + "---\n"
