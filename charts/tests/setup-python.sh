#!/usr/bin/env bash
# Creates charts/tests/.venv with the pinned packages of charts/tests/requirements.txt
# (helm-python-sdk, kubernetes-validate, jsonschema, PyYAML). Idempotent and safe to run
# concurrently: `make chart-test` calls it; CI may call it up front. Needs python3 (>= 3.11)
# with venv.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv"
req="$here/requirements.txt"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"

exec 9>"$here/.venv.lock"
flock 9
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
python3 -c 'import sys; assert sys.version_info >= (3, 11), "the chart tests need Python 3.11+"'
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-input -r "$req"
echo "$want" > "$stamp"
