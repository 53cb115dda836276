import os

# Chapters and library code keep progress bars quiet under tests.
os.environ.setdefault("TTSCALE_QUIET", "1")
