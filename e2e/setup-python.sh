#!/usr/bin/env bash
# e2e/.venv with e2e/requirements.txt: the MCP Python SDK and moto (S3), pinned.
exec bash "$(dirname "$0")/../tests/python-venv.sh" "$(dirname "$0")"
