"""Sphinx extension: the book's results page, gathered from what the chapters record when they run.

A page holding the directive ::

    ```{results-at-a-glance}
    ```

gets, when the book is built, one table per chapter (in the order of the table of contents) of
every verdict that chapter recorded with :func:`ttbook.verdicts.record`: the claim, where it comes
from, the verdict, what this run found, and a link to the figure or section with the evidence.
Above the tables a sentence counts the verdicts. The records are read from myst-nb's glue cache
(``<jupyter_execute>/<doc>.glue.json``), so the page always shows the chapters' last executed run,
and the page is rebuilt on every build. A target label that does not exist is a build warning (an
error in the strict build). Registered in ``_config.yml`` (``sphinx: extra_extensions``).
"""

from __future__ import annotations

import json
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import Directive
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util import logging

from . import verdicts

__all__ = ["setup", "inline_with_math", "chapter_order", "summary_sentence"]

LOG = logging.getLogger(__name__)


class results_placeholder(nodes.General, nodes.Element):
    """Where the results tables go; replaced at write time."""


class ResultsDirective(Directive):
    has_content = False

    def run(self):
        env = self.state.document.settings.env
        if not hasattr(env, "ttbook_results_docs"):
            env.ttbook_results_docs = set()
        env.ttbook_results_docs.add(env.docname)
        # the tables arrive after reading, with maths in them: a hidden formula marks the page as having
        # equations, so that MathJax is loaded for it
        hidden = nodes.comment()
        hidden += nodes.math("x", "x")
        return [results_placeholder(), hidden]


def inline_with_math(text: str) -> list[nodes.Node]:
    """Text nodes, with each ``$…$`` span as inline maths (a lone ``$`` stays text)."""
    parts = text.split("$")
    if len(parts) % 2 == 0:  # unbalanced: no maths
        return [nodes.Text(text)]
    out = []
    for i, part in enumerate(parts):
        if not part:
            continue
        out.append(nodes.math(part, part) if i % 2 else nodes.Text(part))
    return out


def chapter_order(env) -> list[str]:
    """Documents in the order of the table of contents, from the root document."""
    seen, order = set(), []

    def walk(doc):
        if doc in seen:
            return
        seen.add(doc)
        order.append(doc)
        for child in env.toctree_includes.get(doc, []):
            walk(child)

    walk(env.config.root_doc)
    return order


def summary_sentence(records: list[dict], chapters: int) -> str:
    """'N verdicts from C chapters: a reproduced, b partly reproduced, …' (zero counts left out)."""
    counts = [(s, sum(r["status"] == s for r in records)) for s in verdicts.STATUSES]
    parts = ", ".join(f"{c} {s}" for s, c in counts if c)
    return (f"{len(records)} verdict{'s' * (len(records) != 1)} from {chapters} "
            f"chapter{'s' * (chapters != 1)}" + (f": {parts}." if parts else "."))


def _cell(children) -> nodes.entry:
    entry = nodes.entry()
    para = nodes.paragraph()
    para.extend(children)
    entry += para
    return entry


def _table(title: list[nodes.Node], header: list[str], rows: list[list[list[nodes.Node]]], ident: str) -> nodes.table:
    table = nodes.table(classes=["ttbook-results"], ids=[ident])   # an id, so numfig does not warn
    caption = nodes.title()
    caption.extend(title)
    table += caption
    group = nodes.tgroup(cols=len(header))
    table += group
    for width in (22, 14, 11, 41, 12):
        group += nodes.colspec(colwidth=width)
    thead = nodes.thead()
    group += thead
    row = nodes.row()
    for h in header:
        row += _cell([nodes.Text(h)])
    thead += row
    tbody = nodes.tbody()
    group += tbody
    for cells in rows:
        row = nodes.row()
        for c in cells:
            row += _cell(c)
        tbody += row
    return table


class FillResults(SphinxPostTransform):
    """Replace each placeholder by the tables of every chapter's recorded verdicts."""

    default_priority = 4  # before myst-nb's cross-document glue (5) and reference resolution (10)

    def apply(self, **kwargs):
        placeholders = list(self.document.findall(results_placeholder))
        if not placeholders:
            return
        env, builder = self.env, self.app.builder
        folder = Path(env.mystnb_config.output_folder)
        std = env.get_domain("std")
        here = env.docname
        content, records, chapters = [], [], 0
        for doc in chapter_order(env):
            path = folder.joinpath(*doc.split("/")[:-1], doc.split("/")[-1] + ".glue.json")
            if doc == here or not path.is_file():
                continue
            recs = verdicts.collect(json.loads(path.read_text()))
            if not recs:
                continue
            chapters += 1
            title = env.titles[doc].astext() if doc in env.titles else doc
            link = nodes.reference("", title, internal=True, refuri=builder.get_relative_uri(here, doc))
            rows = []
            for rec in recs.values():
                records.append(rec)
                rows.append([inline_with_math(rec["claim"]), [nodes.Text(rec["source"])],
                             [nodes.strong(rec["status"], rec["status"])], inline_with_math(rec["finding"]),
                             [self._evidence(rec["target"], doc, std, builder, env, placeholders[0])]])
            content.append(_table([nodes.Text("Verdicts of "), link],
                                  ["Claim", "Source", "Verdict", "What this run found", "Evidence"], rows,
                                  "results-" + doc.replace("/", "-")))
        lead = nodes.paragraph(text=summary_sentence(records, chapters))
        for node in placeholders:
            node.replace_self([lead.deepcopy(), *[t.deepcopy() for t in content]])

    def _evidence(self, label, doc, std, builder, env, where):
        if label in std.labels:
            target_doc, anchor, name = std.labels[label]
        elif label in std.anonlabels:
            (target_doc, anchor), name = std.anonlabels[label], label
        else:
            LOG.warning(f"results page: label {label!r} recorded by {doc!r} does not exist", location=where)
            return nodes.Text(label)
        if label.startswith("fig-"):
            number = env.toc_fignumbers.get(target_doc, {}).get("figure", {}).get(anchor)
            name = "Figure " + ".".join(map(str, number)) if number else "Figure"
        uri = builder.get_relative_uri(env.docname, target_doc) + "#" + anchor
        return nodes.reference("", name, internal=True, refuri=uri)


def _always_rebuild(app, env, added, changed, removed):
    return sorted(getattr(env, "ttbook_results_docs", set()) - set(removed))


def _purge(app, env, docname):
    getattr(env, "ttbook_results_docs", set()).discard(docname)


def _merge(app, env, docnames, other):
    env.ttbook_results_docs = getattr(env, "ttbook_results_docs", set()) | getattr(other, "ttbook_results_docs", set())


def _skip(self, node):
    raise nodes.SkipNode


def setup(app):
    app.add_node(results_placeholder, html=(_skip, None), latex=(_skip, None), text=(_skip, None))
    app.add_directive("results-at-a-glance", ResultsDirective)
    app.add_post_transform(FillResults)
    app.connect("env-get-outdated", _always_rebuild)
    app.connect("env-purge-doc", _purge)
    app.connect("env-merge-info", _merge)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
