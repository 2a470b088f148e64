#!/usr/bin/env bash
# Creates operator/.venv with the pinned packages of operator/requirements.txt (kmock, the
# stand-in Kubernetes API server, and jsonschema). Idempotent and safe to run concurrently:
# the operator's Rust tests call it; CI may call it up front. Needs python3 (>= 3.11) with venv.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
venv="$here/.venv"
req="$here/requirements.txt"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"

exec 9>"$here/.venv.lock"
flock 9
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
python3 -c 'import sys; assert sys.version_info >= (3, 11), "kmock needs Python 3.11+"'
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-input -r "$req"
echo "$want" > "$stamp"
