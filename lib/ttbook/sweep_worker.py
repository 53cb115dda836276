"""One sweep run in its own process: ``python -m ttbook.sweep_worker CHAPTER OVERRIDES NOTEBOOK RESULT``.

The local sweep (:func:`ttbook.sweeps.run`) starts one of these per run, so a worker that dies
(killed, out of memory) costs only the run it held: the parent sees a missing result and retries
that run. The worker writes its PID to ``NOTEBOOK.running`` while it works, turns SIGTERM into a
clean stop (papermill then shuts the kernel down), and writes the run's record as JSON to
``RESULT`` when the chapter has finished, whether it succeeded or failed.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path


def running_marker(notebook) -> Path:
    """Where a worker announces its PID while it runs the point whose notebook is ``notebook``."""
    return Path(notebook).with_suffix(".running")


def _stop(signum, frame):  # SIGTERM from the parent (Ctrl-C there): unwind so the kernel is shut down
    raise KeyboardInterrupt


def main(argv=None) -> int:
    chapter, overrides, notebook, result = argv if argv is not None else sys.argv[1:]
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C belongs to the parent, which stops us
    from . import runs

    marker = running_marker(notebook)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"pid": os.getpid()}))
    try:
        record = runs.execute(chapter, json.loads(overrides), notebook)
        runs.write_report(record, result)
    except KeyboardInterrupt:
        return 130
    finally:
        marker.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
