#!/usr/bin/env bash
# Strict Jupyter Book build of the intro plus ONE chapter, in a scratch copy of the tree,
# so a chapter can be checked (cell errors, cross-references, citations) without building
# (or disturbing) the whole book.   Usage: tools/build_one.sh book/hardness.md [OUTDIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
chapter=${1:?usage: tools/build_one.sh book/CHAPTER.md [OUTDIR]}
name=$(basename "$chapter" .md)
out=${2:-/tmp/build_one_$name}
rm -rf "$out"; mkdir -p "$out/book"
cp -r "$root/_config.yml" "$root/references.bib" "$root/_static" "$out/"
cp "$root/book/intro.md" "$root/book/references.md" "$out/book/"
[ "$name" = intro ] || cp "$root/$chapter" "$out/book/"
{ echo "format: jb-book"; echo "root: book/intro"; echo "chapters:";
  [ "$name" = intro ] || echo "  - file: book/$name"; echo "  - file: book/references"; } > "$out/_toc.yml"
cd "$out"
"$root/.venv/bin/jupyter-book" build -W -n --keep-going . 2>&1 | tail -40
echo "built: $out/_build/html/index.html"
