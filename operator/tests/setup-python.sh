#!/usr/bin/env bash
# operator/.venv with operator/requirements.txt: kmock (the stand-in Kubernetes API server)
# and jsonschema. The operator's Rust tests call it; CI may call it up front.
exec bash "$(dirname "$0")/../../tests/python-venv.sh" "$(dirname "$0")/.."
