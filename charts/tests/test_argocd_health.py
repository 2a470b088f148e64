"""The Argo CD health check for Tollgate resources (examples/gitops/argocd-health.lua, quoted
in README.md) run in Lua 5.1, the language level of Argo CD's gopher-lua, via lupa.

Argo CD runs a health script with the resource as the global `obj` and reads the returned
table's `status` and `message`.
"""

import pathlib
import unittest

from lupa import lua51

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = (ROOT / "examples/gitops/argocd-health.lua").read_text()


def health(obj: dict) -> dict:
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(SCRIPT)
    return {"status": result["status"], "message": result["message"]}


def key(generation=2, status=None) -> dict:
    obj = {"apiVersion": "tollgate.dev/v1alpha1", "kind": "VirtualKey",
           "metadata": {"name": "alice", "namespace": "dev-tools", "generation": generation}}
    if status is not None:
        obj["status"] = status
    return obj


def ready(status, reason="Compiled", message="in the policy", observed=2) -> dict:
    return {"observedGeneration": observed,
            "conditions": [{"type": "Ready", "status": status, "reason": reason, "message": message}]}


class ArgoHealth(unittest.TestCase):
    def test_cases(self):
        cases = [
            ("no status yet", key(), "Progressing", "waiting for the operator"),
            ("ready", key(status=ready("True")), "Healthy", "in the policy"),
            ("not ready", key(status=ready("False", "TeamNotFound", 'team "ghost" does not exist')),
             "Degraded", 'TeamNotFound: team "ghost" does not exist'),
            ("stale status", key(generation=3, status=ready("True")), "Progressing",
             "the operator has not seen generation 3 yet"),
            ("no conditions", key(status={"observedGeneration": 2}), "Progressing", "waiting for the operator"),
            ("unknown", key(status=ready("Unknown")), "Progressing", "waiting for the operator"),
            ("cluster-scoped, no generation", {"kind": "Team", "metadata": {"name": "platform"},
                                               "status": ready("True")}, "Healthy", "in the policy"),
        ]
        for name, obj, want_status, want_message in cases:
            with self.subTest(name):
                got = health(obj)
                self.assertEqual(got["status"], want_status, name)
                self.assertEqual(got["message"], want_message, name)

    def test_readme_quotes_the_script(self):
        readme = (ROOT / "README.md").read_text()
        indented = "".join("    " + line + "\n" if line else "\n" for line in SCRIPT.splitlines())
        self.assertIn("resource.customizations.health.tollgate.dev_*: |\n" + indented, readme)


if __name__ == "__main__":
    unittest.main()
