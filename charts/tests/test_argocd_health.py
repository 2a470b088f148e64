"""The Argo CD health check for Tollgate resources (examples/gitops/argocd-health.lua, quoted
in README.md) run in Lua 5.1, the language level of Argo CD's gopher-lua, via lupa.

Argo CD runs a health script with the resource as the global `obj` and reads the returned
table's `status` and `message`. The README's snippet is also checked as the ConfigMap it claims
to be (argocd-cm, keys the API server accepts).
"""

import pathlib
import re
import unittest

import kubernetes_validate
import yaml
from lupa import lua51

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = (ROOT / "examples/gitops/argocd-health.lua").read_text()


def health_of(script: str, obj: dict) -> dict:
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(script)
    return {"status": result["status"], "message": result["message"]}


def health(obj: dict) -> dict:
    return health_of(SCRIPT, obj)


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



# A ConfigMap data key (k8s.io/apimachinery IsConfigMapKey): the API server refuses any other.
CONFIGMAP_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


def readme_argocd_cm() -> dict:
    """The argocd-cm snippet of README.md, parsed (the one yaml block that names argocd-cm)."""
    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    (block,) = [b for b in blocks if "argocd-cm" in b]
    return yaml.safe_load(block)


class ReadmeSnippet(unittest.TestCase):
    """The README's Argo CD snippet is a ConfigMap the API server accepts, in the shape Argo CD
    reads, with the script above. Its data keys once held `*`, which no ConfigMap key may."""

    def test_is_a_valid_argocd_cm(self):
        cm = readme_argocd_cm()
        self.assertEqual((cm["apiVersion"], cm["kind"]), ("v1", "ConfigMap"))
        self.assertEqual((cm["metadata"]["name"], cm["metadata"]["namespace"]), ("argocd-cm", "argocd"))
        kubernetes_validate.validate(cm, "1.33.0", strict=True)
        for key in cm["data"]:
            with self.subTest(key=key):
                self.assertRegex(key, CONFIGMAP_KEY)
                self.assertLessEqual(len(key), 253)

    def test_customizations_block_holds_the_script_for_every_kind(self):
        customizations = yaml.safe_load(readme_argocd_cm()["data"]["resource.customizations"])
        self.assertEqual(list(customizations), ["tollgate.dev/*"], "one wildcard entry: group tollgate.dev, any kind")
        script = customizations["tollgate.dev/*"]["health.lua"]
        self.assertEqual(script, SCRIPT)
        self.assertEqual(health_of(script, key(status=ready("True")))["status"], "Healthy")

    def test_named_per_kind_keys_are_valid_and_cover_every_kind(self):
        """The alternative the README names: resource.customizations.health.<group>_<kind> per kind."""
        readme = (ROOT / "README.md").read_text()
        first = re.search(r"`resource\.customizations\.health\.tollgate\.dev_([A-Za-z]+)`", readme)
        self.assertIsNotNone(first)
        kinds = {first.group(1)} | set(re.findall(r"`\.\.\._([A-Za-z]+)`", readme))
        crd_kinds = {yaml.safe_load(p.read_text())["spec"]["names"]["kind"] for p in (ROOT / "crds").glob("*.yaml")}
        self.assertEqual(kinds, crd_kinds)
        for kind in kinds:
            self.assertRegex(f"resource.customizations.health.tollgate.dev_{kind}", CONFIGMAP_KEY)


if __name__ == "__main__":
    unittest.main()
