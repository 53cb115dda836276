"""ttscale: the tested library behind the book on training data and test-time scaling.

Modules, one idea each, grouped by the chapter that introduces them:

- foundations ({ref}`sec-intro`): ``checks`` (argument validation), ``covariances`` (spectra
  and rotations), ``prompts`` (seeded prompt streams and the token embedding), ``theory``
  (closed-form errors and bounds), ``lsa`` (linear self-attention and its CoT rollout),
  ``estimators`` (the pseudo-Newton recursion), ``plotting`` (one figure style), ``progress``;
- {ref}`sec-pseudo-newton`: ``training`` (LSA training), ``baselines`` (least squares, ridge,
  Newton, gradient descent), ``montecarlo`` (errors with bootstrap bands), ``preconditioner``
  (Γ estimated from finitely many prompts);
- {ref}`sec-finite-m`: ``wishart`` (exact Wishart trace moments by loop equations, Gaussian
  moment expansions over pairings) behind ``theory.finite_m_error``;
- {ref}`sec-hardness`: ``hardness``; {ref}`sec-overthinking`: ``overthinking``;
- {ref}`sec-task-selection`: ``mixtures`` (the map learned from a task mixture), ``selection``
  (choosing the mixture);
- {ref}`sec-gpt2`: ``gpt2`` (the decoder and its rollout), ``gpt2_training`` (training and the
  checkpoint cache);
- re-running the book: ``chapters``, ``parameters``, ``results``, ``runs``, ``sweeps``, ``cli``
  (``python -m ttscale``), ``sphinx_notebooks`` (the .ipynb download in the rendered book).
"""

__version__ = "0.1.0"
