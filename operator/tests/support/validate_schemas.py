"""Validates objects against CRD openAPIV3Schemas with jsonschema.

Stricter than the API server in one way on purpose: an unknown field is an error here (the
API server would silently prune it, which hides typos in manifests).

stdin: JSON list of {"name": str, "schema": {...}, "object": {...}}; prints one line per
problem and exits 1 if there is any.
"""

import json
import sys

import jsonschema


def strict(schema: dict, root: bool = False) -> dict:
    s = dict(schema)
    # OpenAPI's `nullable` is JSON Schema's null type. (The API server drops an explicit null
    # of a non-nullable field before validating; the objects tested here hold none.)
    if s.pop("nullable", False) and "type" in s:
        s["type"] = [s["type"], "null"]
    if "properties" in s:
        s["properties"] = {k: strict(v) for k, v in s["properties"].items()}
        if root:
            s["properties"].update(apiVersion={"type": "string"}, kind={"type": "string"},
                                   metadata={"type": "object"})
        s.setdefault("additionalProperties", False)
    if isinstance(s.get("items"), dict):
        s["items"] = strict(s["items"])
    if isinstance(s.get("additionalProperties"), dict):
        s["additionalProperties"] = strict(s["additionalProperties"])
    return s


def main() -> int:
    problems = 0
    for case in json.load(sys.stdin):
        validator = jsonschema.Draft7Validator(strict(case["schema"], root=True))
        for err in validator.iter_errors(case["object"]):
            path = ".".join(str(p) for p in err.absolute_path) or "(root)"
            print(f"{case['name']}: {path}: {err.message}")
            problems += 1
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
