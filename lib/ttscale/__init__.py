"""ttscale: the mathematics and models behind the book on training data and test-time scaling.

Modules, one mathematical object each:

- data and prompts: ``prompts`` (seeded prompt streams, the token embedding, sample covariances);
- covariances and skills: ``covariances`` (spectra, rotations, missing and weak skills, spectra of a
  prescribed hardness);
- theory: ``theory`` (closed-form errors of test-time CoT at m → ∞ and at finite m, task hardness
  and its refinements, divergence edges, bounds), ``wishart`` (exact Wishart moments behind the
  finite-m formulas);
- models: ``lsa`` (linear self-attention and its token-appending CoT rollout), ``gpt2`` (a
  GPT-2-style decoder, its rollout, training and checkpoint cache);
- estimators and baselines: ``estimators`` (the pseudo-Newton recursion, least squares, ridge,
  Newton, gradient descent, the preconditioner estimated from finitely many prompts);
- simulation: ``simulation`` (Monte Carlo errors over seeded prompts, bootstrap bands, reading a
  curve off: first step below a target, best k);
- training: ``training`` (the LSA's training loss and staged Adam);
- mixtures and selection: ``mixtures`` (the map learned from a mixture of task types), ``selection``
  (choosing the mixture);
- ``reference`` (the numbers the book checks against, each with its source in the paper);
- helpers: ``checks`` (argument validation), ``plotting`` (one figure style), ``progress``.

Nothing here imports the book machinery (:mod:`ttbook`: CLI, runs, sweeps, Sphinx extension).
"""

__version__ = "0.1.0"
