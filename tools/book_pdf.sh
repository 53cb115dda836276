#!/usr/bin/env bash
# The whole book as one PDF: _build/pdf/book.pdf, printed by headless Chromium from Jupyter Book's
# one-page (singlehtml) build, with the maths typeset by the vendored MathJax and the print stylesheet
# _static/ttbook-print.css (A4, a chapter per new page, code and outputs wrapped at the column) and
# a PDF outline (bookmarks) of the headings.
#
# Nothing is executed: the one-page build reads every chapter's outputs from the execution cache of
# the last `make book` (_build/.jupyter_cache). Without that cache, or if a chapter changed since it
# was cached, the script stops and says so (run `make book` first). The build runs in a copy of the
# book's source under _build/pdf/work, so _build/html and the cache itself are left untouched.
#
# Usage: tools/book_pdf.sh [--root DIR] [--out FILE]
#   --root DIR  the book's folder, holding _config.yml, _toc.yml and _build/ (default: this repository)
#   --out FILE  where the PDF goes (default: DIR/_build/pdf/book.pdf)
# Environment: CHROMIUM (the browser; default chromium or chromium-browser on PATH),
#   PDF_VIRTUAL_TIME_MS (the page's virtual time before printing, for MathJax; default 20000).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
root=$repo
out=
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root=${2:?--root needs a folder}; shift 2 ;;
    --out) out=${2:?--out needs a file}; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "book_pdf: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
root=$(cd "$root" && pwd)
out=${out:-$root/_build/pdf/book.pdf}
mkdir -p "$(dirname "$out")"
out=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")
py=$repo/.venv/bin/python
jb=$repo/.venv/bin/jupyter-book
die() { echo "book_pdf: $*" >&2; exit 1; }
t0=$SECONDS
say() { echo "book_pdf: [$((SECONDS - t0)) s] $*"; }

[ -x "$jb" ] || die "no $jb: make the venv first (make book)"
cache=$root/_build/.jupyter_cache
[ -f "$cache/global.db" ] || die "no execution cache at $cache: run \`make book\` first (the PDF reuses its executed chapters and executes nothing)"
chromium=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
[ -n "$chromium" ] || die "no chromium on PATH (Debian: apt-get install chromium), or set CHROMIUM"

# A copy of the source the build reads. Under _build/, so git still sees the repository (the book's
# footer names the commit) and nothing outside _build is written.
work=$root/_build/pdf/work
rm -rf "$work"; mkdir -p "$work/_build"
for f in book _config.yml _toc.yml _static references.bib data; do
  if [ -e "$root/$f" ]; then cp -r "$root/$f" "$work/"; fi
done
cp -r "$cache" "$work/_build/"

# Every chapter must already be in the cache: the one-page build would otherwise execute it.
check=$(cd "$work" && OMP_NUM_THREADS=1 "$py" "$repo/tools/execute_parallel.py" --root "$work" --dry-run)
case "$check" in
  *"nothing to execute"*) say "every chapter is in the execution cache of $cache" ;;
  *) die "the execution cache is out of date, the PDF would execute chapters (run \`make book\` first): ${check#execute_parallel: }" ;;
esac

say "building the one-page book (jupyter-book --builder singlehtml)"
log=$root/_build/pdf/build.log
if ! (cd "$work" && OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \
      "$jb" build --builder singlehtml -n --keep-going . >"$log" 2>&1); then
  tail -30 "$log" >&2; die "the one-page build failed (log: $log)"
fi
if grep -q "Executing" "$log"; then
  grep "Executing" "$log" >&2; die "the one-page build executed a chapter (log: $log)"
fi
say "$(grep -c 'Using cached notebook' "$log") chapters read from the cache, none executed"

# Sphinx writes the one page as book/intro.html but points its assets at the root (_static/,
# _images/): print a copy at the root, so every figure, stylesheet and MathJax itself is found.
html=$work/_build/singlehtml
page=$(sed -n 's/.*url=\([^"]*\)".*/\1/p' "$html/index.html" | head -1)
[ -n "$page" ] && [ -f "$html/$page" ] || die "no one-page HTML in $html"
[ -f "$html/_static/ttbook-print.css" ] || die "no _static/ttbook-print.css in the build"
# The print stylesheet goes last in the head; the footer's build line keeps version and commit but
# not its relative links (the source archive and the citation page live beside the web book only).
sed 's|</head>|<link rel="stylesheet" href="_static/ttbook-print.css" type="text/css" />\n</head>|' "$html/$page" \
  | perl -0pe 's{(<p class="ttbook-build">.*?) \xc2\xb7 <a href="\.\./.*?</p>}{$1</p>}s' > "$html/book-print.html"

say "printing with $chromium"
rm -f "$out"
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
"$chromium" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --virtual-time-budget="${PDF_VIRTUAL_TIME_MS:-20000}" \
  --run-all-compositor-stages-before-draw --no-pdf-header-footer --generate-pdf-document-outline \
  --print-to-pdf="$out" "file://$html/book-print.html" >"$root/_build/pdf/chromium.log" 2>&1 \
  || { tail -20 "$root/_build/pdf/chromium.log" >&2; die "chromium failed"; }
[ -s "$out" ] || die "chromium wrote no PDF (log: $root/_build/pdf/chromium.log)"

# Maths left as TeX (MathJax had not finished) shows as \( ... \) or \[ ... \] in the PDF's text.
if command -v pdftotext >/dev/null; then
  if pdftotext "$out" - | grep -q -E '\\\(|\\\[|\\begin\{'; then
    die "the PDF has untypeset TeX (MathJax did not finish: raise PDF_VIRTUAL_TIME_MS): $out"
  fi
fi
pages=$(pdfinfo "$out" 2>/dev/null | sed -n 's/^Pages: *//p' || true)
say "wrote $out (${pages:-?} pages, $(du -h "$out" | cut -f1))"
