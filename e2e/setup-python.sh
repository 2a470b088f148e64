#!/usr/bin/env bash
# e2e/.venv with e2e/requirements.txt: the MCP Python SDK, moto (S3) and the OTLP protobuf
# definitions (e2e/otel/receiver.py), pinned.
exec bash "$(dirname "$0")/../tests/python-venv.sh" "$(dirname "$0")"
