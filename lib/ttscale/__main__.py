"""``python -m ttscale`` is the former name of ``python -m ttbook`` (the book machinery); it forwards there."""

import runpy

if __name__ == "__main__":
    runpy.run_module("ttbook", run_name="__main__")
