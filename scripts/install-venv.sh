#!/usr/bin/env bash
# Install the harness and its dev extras, under constraints.txt, into the virtual
# environment whose interpreter is $1 (the Makefile's $(PY)).
#
# uv does it when it can be had from the registry, else pip. Both resolve the same
# packages; uv unpacks and byte-compiles the ~5.7 GB of wheels (torch's CUDA build and its
# nvidia packages) on every CPU, where pip works on one: a fresh install on the 2-core VM
# took 41 s (uv fetched, then installed) against 84 s (docs/performance.md). The bytecode
# is compiled at install as pip does, since this VM sets PYTHONDONTWRITEBYTECODE and every
# process would otherwise compile torch from source again.
#
# uv reads no pip configuration, so it is given what pip is configured with (its index,
# extra indexes, find-links and constraint files: `pip config list`, files and PIP_*
# variables alike), and pip's rule for choosing among indexes: the best version anywhere
# (--index-strategy unsafe-best-match; uv's default takes the first index that has a
# package, which here picked older releases from the local mirror).
set -euo pipefail
py=$1
cd "$(dirname "$0")/.."
venv_bin=$(dirname "$py")

pip_install() {
  "$py" -m pip install --quiet -c constraints.txt -e '.[dev]'
}

if ! "$py" -m pip install --quiet uv >/dev/null 2>&1 || ! [ -x "$venv_bin/uv" ]; then
  echo "install: uv is not available here; installing with pip" >&2
  pip_install
  exit
fi

args=()
while IFS= read -r line; do
  key=${line%%=*}
  value=${line#*=}
  value=${value#\'}
  value=${value%\'}
  case $key in
    *.extra-index-url) opt=--extra-index-url ;;
    *.index-url) opt=--index-url ;;
    *.find-links) opt=--find-links ;;
    *.constraint) opt=--constraint ;;
    *) continue ;;
  esac
  for item in $value; do  # pip's list values are separated by white space
    args+=("$opt" "$item")
  done
done < <("$py" -m pip config list 2>/dev/null)

UV_NO_PROGRESS=1 "$venv_bin/uv" pip install --python "$py" --quiet --compile-bytecode \
  --index-strategy unsafe-best-match "${args[@]}" -c constraints.txt -e '.[dev]' \
  || { echo "install: uv failed (above); installing with pip" >&2; pip_install; }
