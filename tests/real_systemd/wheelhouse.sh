#!/usr/bin/env bash
# Fill build/wheelhouse with what the real-systemd tests install offline inside their
# containers: the three servers (uWSGI as an sdist, compiled there against Debian's
# python3), opskit's own dependencies, and the build backends. Needs the package registry;
# run it before the tests (.ci/run does), never from a test. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/../.."
dest="${OPSKIT_WHEELHOUSE:-build/wheelhouse}"
# Filled for this pyproject.toml already (its dependencies are what opskit's venv needs)?
stamp="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$dest/.filled-for" 2>/dev/null)" = "$stamp" ]; then
  echo "wheelhouse: $dest already filled"
  exit 0
fi
mkdir -p "$dest"
# Download with the containers' own interpreter (Debian's python3, which sees the same
# /usr), so the binary wheels pip picks fit there whatever Python runs the project.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
/usr/bin/python3 -m venv "$tmp/venv"
# "." brings opskit's own dependencies.
"$tmp/venv/bin/python" -m pip download --quiet --disable-pip-version-check --dest "$dest" \
  . gunicorn uvicorn uwsgi setuptools wheel hatchling
echo "$stamp" > "$dest/.filled-for"
echo "wheelhouse: $(find "$dest" -maxdepth 1 -type f | wc -l) files in $dest"
