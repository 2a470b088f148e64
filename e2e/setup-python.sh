#!/usr/bin/env bash
# Creates e2e/.venv with the pinned packages of e2e/requirements.txt (idempotent: a venv whose
# stamp matches requirements.txt is left alone).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
# Test binaries may run this concurrently: one installs, the others wait.
exec 9>"$here/.venv.lock"
flock 9
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check --require-virtualenv -r "$here/requirements.txt"
echo "$want" > "$stamp"
