#!/usr/bin/env bash
# Usage: tests/python-venv.sh DIR
# Creates DIR/.venv with the pinned packages of DIR/requirements.txt. Idempotent (a venv whose
# stamp matches requirements.txt is left alone) and safe to run concurrently (test binaries
# call it in parallel: one installs, the others wait). Needs python3 (>= 3.11) with venv.
set -euo pipefail
here="$(cd "${1:?usage: python-venv.sh DIR}" && pwd)"
venv="$here/.venv"
req="$here/requirements.txt"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"

exec 9>"$here/.venv.lock"
flock 9
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
python3 -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed"'
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-input --require-virtualenv -r "$req"
echo "$want" > "$stamp"
