#!/usr/bin/env bash
# Fill build/wheelhouse with what the real-systemd tests install offline inside their
# containers: the three servers (uWSGI as an sdist, compiled there against Debian's
# python3), opskit's own dependencies, the build backends, and the real-app corpus
# (tests/real_systemd/corpus.txt: httpbin, Django, FastAPI, psycopg ...). Needs the
# package registry when it downloads; never called from a test. `make test` runs it as a
# prerequisite (target build/wheelhouse/.filled-for): it downloads only when opskit's
# dependencies, this script or corpus.txt changed since the last fill, and otherwise just
# marks the stamp current.
set -euo pipefail
self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$self")/../.."
dest="${OPSKIT_WHEELHOUSE:-build/wheelhouse}"
if ! /usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null; then
  echo "wheelhouse: /usr/bin/python3 cannot make a venv: apt-get install python3-venv" \
    "(.ci/run installs it)" >&2
  exit 1
fi
# What decides the contents: opskit's dependencies and build backend (from pyproject.toml,
# so an edit of its tool tables downloads nothing), this script's own download list and
# the corpus's pins.
deps="$(/usr/bin/python3 - <<'PY'
import tomllib

with open("pyproject.toml", "rb") as handle:
    data = tomllib.load(handle)
print(data["project"].get("dependencies", []), data["build-system"].get("requires", []))
PY
)"
corpus="tests/real_systemd/corpus.txt"
stamp="$( { echo "$deps"; cat "$self" "$corpus"; } | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$dest/.filled-for" 2>/dev/null)" = "$stamp" ]; then
  # Current: touch it so make sees the target newer than pyproject.toml.
  touch "$dest/.filled-for"
  echo "wheelhouse: $dest already filled"
  exit 0
fi
mkdir -p "$dest"
# Download with the containers' own interpreter (Debian's python3, which sees the same
# /usr), so the binary wheels pip picks fit there whatever Python runs the project.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
/usr/bin/python3 -m venv "$tmp/venv"
# ".[uv]" brings opskit's own dependencies and uv (releases built with installer = uv).
"$tmp/venv/bin/python" -m pip download --quiet --disable-pip-version-check --dest "$dest" \
  ".[uv]" gunicorn uvicorn uwsgi setuptools wheel hatchling
# The corpus on its own: its pins need not agree with opskit's dependencies (they go to
# different venvs); a second version of a shared dependency is just one more file.
"$tmp/venv/bin/python" -m pip download --quiet --disable-pip-version-check --dest "$dest" \
  -r "$corpus"
echo "$stamp" > "$dest/.filled-for"
echo "wheelhouse: $(find "$dest" -maxdepth 1 -type f -not -name '.*' | wc -l) files in $dest"
