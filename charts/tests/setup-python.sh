#!/usr/bin/env bash
# charts/tests/.venv with charts/tests/requirements.txt: helm-python-sdk, kubernetes-validate,
# jsonschema, PyYAML, lupa and cel-python. `make chart-test` calls it.
exec bash "$(dirname "$0")/../../tests/python-venv.sh" "$(dirname "$0")"
