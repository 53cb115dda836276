"""The command line: ``python -m ttbook {list,params,run,sweep}``.

* ``list``: the book's chapters.
* ``params CHAPTER``: each parameter with its type, default, smoke value and meaning.
* ``run CHAPTER -p NAME VALUE ... [-o OUT.ipynb] [--smoke]``: execute the chapter with
  papermill; the executed notebook goes to ``OUT.ipynb`` (default
  ``runs/CHAPTER/KEY.ipynb``) next to ``OUT.json``, the report of the parameters used, the
  glued results and the time taken.
* ``sweep CHAPTER -p NAME V1,V2,... ... [--smoke] [--workers N] [--scheduler ADDRESS]``: the
  grid of runs, in parallel, resumable; prints the table of results and writes it as CSV.

Unknown parameter names and values of the wrong type are rejected (exit status 2) before a
kernel starts; a failed run exits with status 1 after printing its parameters and traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main", "build_parser"]


class _Error(Exception):
    """A usage error: reported as ``ttbook: error: ...`` with exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m ttbook`` (sub-commands list, params, run, sweep)."""
    parser = argparse.ArgumentParser(
        prog="python -m ttbook",
        description="Re-run the book's chapters with your own parameters, alone or in sweeps.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{list,params,run,sweep}")

    sub.add_parser("list", help="list the chapters")

    p = sub.add_parser("params", help="list a chapter's parameters with defaults and meanings")
    p.add_argument("chapter", help="chapter name, e.g. intro (or book/intro.md)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    r = sub.add_parser("run", help="execute a chapter with papermill and other parameters")
    r.add_argument("chapter")
    r.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="override a parameter (repeatable); VALUE is read as a Python literal")
    r.add_argument("-o", "--output", help="executed notebook (default runs/CHAPTER/KEY.ipynb); "
                                           "the report goes next to it as .json")
    r.add_argument("--smoke", action="store_true", help="start from the chapter's small smoke parameters")
    r.add_argument("--progress", action="store_true", help="show papermill's cell progress bar")

    s = sub.add_parser("sweep", help="run a grid of parameters in parallel and tabulate the results")
    s.add_argument("chapter")
    s.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUES"),
                   help="comma-separated values of one axis of the grid, e.g. -p seed 0,1,2 (repeatable)")
    s.add_argument("--smoke", action="store_true", help="start every run from the smoke parameters")
    s.add_argument("--dir", help="sweep directory (default sweeps/CHAPTER); runs are kept under DIR/runs/")
    s.add_argument("--csv", help="where to write the table (default DIR/results.csv)")
    s.add_argument("--workers", type=int, help="parallel runs (default: the number of cores)")
    s.add_argument("--scheduler", metavar="ADDRESS",
                   help="run on a Dask distributed scheduler (tcp://host:8786), or 'local' for a LocalCluster")
    s.add_argument("--force", action="store_true", help="re-run points that already finished")
    s.add_argument("--retries", type=int, default=1,
                   help="times a run whose worker process died is started again (default 1)")
    return parser


def _overrides(pairs) -> dict:
    out = {}
    for name, value in pairs:
        if name in out:
            raise _Error(f"parameter {name!r} given twice")
        out[name] = value
    return out


def _cmd_list(args) -> int:
    from . import chapters

    rows = [("chapter", "title", "default run", "smoke run")]
    for name in chapters.chapters():
        path = chapters.chapter_path(name)
        runtime = chapters.front_matter(path).get("runtime") or {}
        note = f"  ({runtime['note']})" if runtime.get("note") else ""
        rows.append((name, chapters.title(path), _seconds(runtime.get("default")), _seconds(runtime.get("smoke")) + note))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row[:3], widths)) + "  " + row[3])
    print("\n(run times measured on a 2-core machine, one chapter at a time; --smoke starts from the small parameters)")
    return 0


def _seconds(value) -> str:
    if not isinstance(value, (int, float)):
        return "?"
    return f"~{value:.0f} s" if value < 90 else f"~{value / 60:.1f} min"


def _cmd_params(args) -> int:
    from . import chapters, parameters

    path = chapters.chapter_path(args.chapter)
    params = parameters.describe(path)
    if args.json:
        print(json.dumps([{"name": p.name, "type": parameters.type_name(p.default), "default": p.default,
                           "smoke": p.smoke if p.has_smoke else None, "meaning": p.meaning,
                           "domain": p.domain.text if p.domain else None} for p in params], indent=2))
        return 0
    rows = [("name", "domain", "default", "smoke", "meaning")]
    rows += [(p.name, p.domain.text if p.domain else parameters.type_name(p.default), parameters.format_value(p.default),
              parameters.format_value(p.smoke) if p.has_smoke else "", p.meaning) for p in params]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    print(f"Parameters of {path.stem} ({path.relative_to(chapters.ROOT) if path.is_relative_to(chapters.ROOT) else path}); "
          f"override with -p NAME VALUE:\n")
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row[:4], widths)) + "  " + row[4])
    reqs = parameters.requirements(path)
    if reqs:
        print("\nand together:")
        for r in reqs:
            print(f"  - {r.rule}")
    return 0


def _print_failure(record: dict, file=sys.stderr) -> None:
    err = record.get("error") or {}
    print(f"FAILED {record.get('chapter')} with {json.dumps(record.get('overrides', {}))}: "
          f"{err.get('ename')}: {err.get('evalue')}", file=file)
    tb = (err.get("traceback") or "").rstrip()
    if tb:
        print("\n".join("    " + line for line in tb.splitlines()), file=file)
    if record.get("notebook"):
        print(f"    (executed notebook: {record['notebook']})", file=file)


def _cmd_run(args) -> int:
    from . import parameters, runs

    overrides = parameters.resolve(args.chapter, _overrides(args.parameter), smoke=args.smoke)
    output = Path(args.output) if args.output else runs.default_output(args.chapter, overrides)
    if output.suffix != ".ipynb":
        raise _Error(f"output must end in .ipynb, got {str(output)!r}")
    shown = ", ".join(f"{k}={parameters.format_value(v)}" for k, v in overrides.items()) or "defaults"
    print(f"running {Path(args.chapter).stem} with {shown} ...", file=sys.stderr, flush=True)
    record = runs.execute(args.chapter, overrides, output, progress=args.progress)
    report = runs.write_report(record, runs.report_path(output))
    if record["status"] != "ok":
        _print_failure(record)
        print(f"report: {report}", file=sys.stderr)
        return 1
    print(f"{record['status']} in {record['seconds']:.1f} s")
    print(f"notebook: {output}")
    print(f"report:   {report}")
    if record["results"]:
        from . import chapters, results

        meaning = results.meanings(chapters.chapter_path(args.chapter))
        width = max(len(k) for k in record["results"])
        vwidth = min(24, max(len(_short(v)) for v in record["results"].values()))
        print("results (▢ marks where the page quotes the number):")
        for k, v in record["results"].items():
            print(f"  {k.ljust(width)}  {_short(v).ljust(vwidth)}  {meaning.get(k, '')}".rstrip())
    return 0


def _short(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _cmd_sweep(args) -> int:
    from . import parameters, sweeps

    axes = {}
    for name, text in args.parameter:
        if name in axes:
            raise _Error(f"parameter {name!r} given twice")
        try:
            axes[name] = parameters.split_values(text)
        except ValueError as exc:
            raise _Error(f"-p {name}: {exc}") from None
    if not axes:
        raise _Error("a sweep needs at least one -p NAME VALUES axis")
    directory = Path(args.dir) if args.dir else sweeps.default_directory(args.chapter)
    points = sweeps.plan(args.chapter, axes, smoke=args.smoke, directory=directory)
    where = f"Dask scheduler {args.scheduler}" if args.scheduler else "local process pool"
    print(f"sweep of {points[0].chapter}: {len(points)} run(s) in {directory} on the {where}", file=sys.stderr,
          flush=True)
    result = sweeps.run(args.chapter, points, workers=args.workers, scheduler=args.scheduler, force=args.force,
                        retries=args.retries, echo=lambda line: print(line, file=sys.stderr, flush=True))
    df = sweeps.table(result, axes=list(axes))
    csv = Path(args.csv) if args.csv else directory / "results.csv"
    csv.parent.mkdir(parents=True, exist_ok=True)
    kept = sweeps.merge_csv(df, csv)
    import pandas as pd

    with pd.option_context("display.max_columns", None, "display.width", 200, "display.max_colwidth", 40):
        print(df.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    from . import chapters, results

    meaning = results.meanings(chapters.chapter_path(args.chapter))
    shown = [c for c in df.columns if c in meaning]
    if shown:
        width = max(len(c) for c in shown)
        print("\ncolumns (▢ marks where the page quotes the number):")
        for c in shown:
            print(f"  {c.ljust(width)}  {meaning[c]}")
    print(f"\ntable: {csv}" + (f" (with {kept} row(s) of earlier sweeps in the same folder)" if kept else ""))
    for p in result.failed:
        _print_failure(result.records.get(p.key) or {"chapter": p.chapter, "overrides": p.overrides,
                                                     "error": {"ename": "NotRun", "evalue": "run did not finish"}})
    if result.failed:
        print(f"{len(result.failed)} of {len(points)} run(s) failed; re-run the same command to retry them "
              f"(finished runs are skipped)", file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    """Entry point of ``python -m ttbook``; returns the exit status (0 ok, 1 a run failed, 2 bad input)."""
    parser = build_parser()
    rest, pairs = _extract_parameters(list(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(rest)
    if hasattr(args, "parameter"):
        args.parameter = pairs
    elif pairs:
        parser.error(f"-p is not an option of {args.command!r}")
    handler = {"list": _cmd_list, "params": _cmd_params, "run": _cmd_run, "sweep": _cmd_sweep}[args.command]
    try:
        return handler(args)
    except (_Error, ValueError) as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    except KeyboardInterrupt:
        print("interrupted; finished runs are kept (re-run the same command to resume)", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `list | head`: the reader left; say nothing
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _extract_parameters(argv: list[str]):
    """Take every ``-p NAME VALUE`` out of ``argv`` before argparse sees it.

    argparse reads a value that starts with ``-`` (``-p d -3,10``) as an option; here the two
    words after ``-p`` are always the name and the value.
    """
    rest, pairs, i = [], [], 0
    while i < len(argv):
        if argv[i] in ("-p", "--parameter"):
            if i + 2 >= len(argv):
                print(f"python -m ttbook: error: {argv[i]} needs a NAME and a VALUE", file=sys.stderr)
                raise SystemExit(2)
            pairs.append([argv[i + 1], argv[i + 2]])
            i += 3
        else:
            rest.append(argv[i])
            i += 1
    return rest, pairs
