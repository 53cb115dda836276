"""ttscale: the tested library behind the book on training data and test-time scaling.

Modules (one idea each): ``checks`` (argument validation), ``covariances`` (spectra and
rotations), ``prompts`` (seeded prompt sampling and the token embedding), ``theory``
(closed-form errors and bounds), ``lsa`` (the linear self-attention model and its CoT
rollout), ``estimators`` (pseudo-Newton and other iterative estimators), ``plotting``
(the book's figure style).
"""

__version__ = "0.1.0"
