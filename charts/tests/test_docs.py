"""The docs and examples say what the schemas and the running system accept.

* every CRD field README.md and examples/k8s name (`VirtualKey.spec.owner`, `spec.x.y` in
  backticks, and every field of every tollgate.dev resource in their YAML) exists in crds/*.yaml,
  read at run time, so fields the operator adds count as soon as `make crds` writes them; a CRD
  prunes unknown fields silently, so a misspelt one in an example would vanish without an error;
* every tool pattern in the examples can match a tool name Claude Code really sends
  (claude-code-tool-names.json, recorded from real Claude Code requests): the proxy matches
  names, not Claude Code's `Bash(rm:*)` permission rules;
* the examples ship no usable key or credential, only the commands to create them;
* every namespace the examples use is created by examples/k8s/namespaces.yaml, applied first;
* the install notes read only a key that an earlier step of theirs creates;
* README.md does not call examples/policy.yaml a policy built into the binary.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import unittest
from pathlib import Path

import kubernetes_validate
import yaml

import test_chart as tc

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
EXAMPLES = ROOT / "examples" / "k8s"
FIXTURES = ROOT / "tests" / "fixtures"
TOP_LEVEL = {"apiVersion", "kind", "metadata", "spec", "status"}


def crd_schemas_by_kind() -> dict[str, dict]:
    """Kind -> openAPIV3Schema (of its storage version) of every CRD in crds/."""
    out = {}
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        version = next(v for v in crd["spec"]["versions"] if v.get("storage", True))
        out[crd["spec"]["names"]["kind"]] = version["schema"]["openAPIV3Schema"]
    return out


def unknown_fields(value, schema: dict, path: str) -> list[str]:
    """Paths in `value` that `schema` does not define (a structural schema prunes them)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        found = []
        for key, item in value.items():
            if props is not None and key in props:
                found += unknown_fields(item, props[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                found += unknown_fields(item, extra, f"{path}.{key}")
            elif extra is True:
                continue
            else:
                found.append(f"{path}.{key}")
        return found
    if isinstance(value, list) and "items" in schema:
        return [p for i, item in enumerate(value) for p in unknown_fields(item, schema["items"], f"{path}[{i}]")]
    return []


def resource_unknown_fields(doc: dict, schemas: dict[str, dict]) -> list[str]:
    schema = schemas[doc["kind"]]
    found = [k for k in doc if k not in TOP_LEVEL]
    for part in ("spec", "status"):
        if part in doc:
            found += unknown_fields(doc[part], schema["properties"][part], f"{doc['kind']}.{part}")
    return found


def path_exists(schema: dict, parts: list[str]) -> bool:
    """Whether a field path (`spec.models.allow`; list items are stepped through) exists."""
    node = schema
    for part in parts:
        part = part.removesuffix("[]")
        while node.get("type") == "array" and "items" in node:
            node = node["items"]
        if node.get("x-kubernetes-preserve-unknown-fields"):
            return True
        props = node.get("properties") or {}
        if part in props:
            node = props[part]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return False
    return True


def yaml_blocks(text: str) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", text, re.S)


def tollgate_docs_in(text: str) -> list[dict]:
    """The tollgate.dev resources in the fenced YAML blocks of a Markdown text."""
    docs = []
    for block in yaml_blocks(text):
        if "apiVersion: tollgate.dev/" not in block:
            continue
        docs += [d for d in yaml.safe_load_all(block) if d and str(d.get("apiVersion", "")).startswith("tollgate.dev/")]
    return docs


def example_docs() -> list[tuple[str, dict]]:
    return [(p.name, d) for p in sorted(EXAMPLES.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]


# Where docs name CRD fields: prose (backticked paths and Kind.spec.x paths) and YAML.
PROSE = [README, EXAMPLES / "README.md", *sorted(EXAMPLES.glob("*.yaml")),
         ROOT / "charts" / "tollgate" / "values.yaml", ROOT / "charts" / "tollgate" / "templates" / "NOTES.txt"]
FIELD = r"(?:spec|status)(?:\.[A-Za-z][A-Za-z0-9]*(?:\[\])?)+"


def named_paths(text: str, kinds: set[str]) -> list[tuple[str | None, str]]:
    """(kind or None, path) for `spec.a.b` / `Kind.spec.a.b` in backticks and Kind.spec.a.b
    anywhere (Kind one of the CRDs' kinds; other kinds' paths, `Pod.spec...`, are not ours)."""
    found = []
    for kind, path in re.findall(rf"`(?:([A-Z][A-Za-z]*)\.)?({FIELD})`", text):
        if not kind or kind in kinds:
            found.append((kind or None, path))
    for kind, path in re.findall(rf"\b([A-Z][A-Za-z]*)\.({FIELD})", text):
        if kind in kinds:
            found.append((kind, path))
    return found


class CrdFieldsInDocs(unittest.TestCase):
    def setUp(self):
        self.schemas = crd_schemas_by_kind()

    def check_path(self, kind: str | None, path: str) -> bool:
        candidates = [self.schemas[kind]] if kind else list(self.schemas.values())
        return any(path_exists(s, path.split(".")) for s in candidates)

    def test_named_paths_exist(self):
        seen = 0
        for source in PROSE:
            for kind, path in named_paths(source.read_text(), set(self.schemas)):
                seen += 1
                with self.subTest(f"{source.relative_to(ROOT)}: {kind + '.' if kind else ''}{path}"):
                    self.assertTrue(self.check_path(kind, path), f"no CRD in crds/ has {path}")
        self.assertGreaterEqual(seen, 3)

    def test_yaml_resources_use_only_defined_fields(self):
        docs = [("README.md", d) for d in tollgate_docs_in(README.read_text())]
        docs += [("examples/k8s/README.md", d) for d in tollgate_docs_in((EXAMPLES / "README.md").read_text())]
        docs += [(f"examples/k8s/{name}", d) for name, d in example_docs() if str(d.get("apiVersion", "")).startswith("tollgate.dev/")]
        self.assertGreaterEqual(len(docs), 10)
        for where, doc in docs:
            with self.subTest(f"{where}: {doc['kind']} {doc['metadata']['name']}"):
                self.assertEqual(resource_unknown_fields(doc, self.schemas), [])

    def test_the_walk_catches_misspelt_fields(self):
        self.assertFalse(self.check_path("VirtualKey", "spec.ownr"))
        self.assertFalse(self.check_path(None, "spec.models.alow"))
        self.assertTrue(self.check_path("VirtualKey", "spec.models.allow"))
        self.assertTrue(self.check_path("VirtualKey", "spec.mcp[].server"))
        bad = {"apiVersion": "tollgate.dev/v1alpha1", "kind": "VirtualKey", "metadata": {"name": "a"},
               "spec": {"owner": "a", "models": {"allow": ["*"], "alow": ["x"]}, "mcp": [{"server": "s", "tool": "x"}]}}
        self.assertEqual(resource_unknown_fields(bad, self.schemas), ["VirtualKey.spec.models.alow", "VirtualKey.spec.mcp[0].tool"])


def glob_regex(pattern: str) -> re.Pattern:
    """The proxy's globs (dataplane/src/policy/glob.rs): `*` any run, `?` one character, the rest literal."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern) + r"\Z", re.S)


def claude_code_tool_names() -> set[str]:
    """Tool names Claude Code sends: built-in tools and MCP tools as mcp__<server>__<tool>
    (charts/tests/claude-code-tool-names.json, from captures of a real Claude Code; the
    repository's request fixture must agree with it)."""
    recorded = set(json.loads((Path(__file__).parent / "claude-code-tool-names.json").read_text())["tools"])
    fixture = {t["name"] for t in json.loads((FIXTURES / "messages-request-claude-code.json").read_text())["tools"]}
    assert fixture <= recorded, f"tests/fixtures has tools the recorded list lacks: {sorted(fixture - recorded)}"
    return recorded


def tool_patterns() -> list[tuple[str, str]]:
    """(where, pattern) of every built-in tool filter in the examples and README.md."""
    found = []

    def lists(where, tools):
        for side in ("allow", "deny"):
            found.extend((f"{where} tools.{side}", p) for p in (tools or {}).get(side) or [])

    for name, doc in example_docs():
        if str(doc.get("apiVersion", "")).startswith("tollgate.dev/"):
            lists(f"examples/k8s/{name}: {doc['kind']} {doc['metadata']['name']}", (doc.get("spec") or {}).get("tools"))
    for path in sorted((ROOT / "examples").glob("policy*.yaml")):
        policy = yaml.safe_load(path.read_text())
        for section in ("keys", "teams"):
            for item in policy.get(section) or []:
                lists(f"examples/{path.name}: {section} {item.get('id')}", item.get("tools"))
    text = README.read_text()
    for block in yaml_blocks(text):
        if "tools:" not in block:
            continue
        try:
            docs = list(yaml.safe_load_all(block))
        except yaml.YAMLError:
            continue
        for doc in docs:
            for item in [doc] + [i for s in ("keys", "teams") for i in ((doc or {}).get(s) or []) if isinstance(doc, dict)]:
                if isinstance(item, dict):
                    lists("README.md yaml", item.get("tools") or (item.get("spec") or {}).get("tools"))
    match = re.search(r"\(by name glob: (.*?)\)", text, re.S)
    found += [("README.md (by name glob)", p) for p in re.findall(r"`([^`]+)`", match.group(1))]
    return found


class ToolPatterns(unittest.TestCase):
    def test_every_pattern_can_match_a_real_tool(self):
        names = claude_code_tool_names()
        self.assertIn("Bash", names)
        self.assertTrue(any(n.startswith("mcp__") for n in names), "the MCP fixture's tools")
        patterns = tool_patterns()
        self.assertGreaterEqual(len(patterns), 4)
        for where, pattern in patterns:
            with self.subTest(f"{where}: {pattern}"):
                regex = glob_regex(pattern)
                self.assertTrue(any(regex.match(n) for n in names),
                                f"{pattern!r} matches none of Claude Code's tool names {sorted(names)}")

    def test_permission_rule_syntax_matches_nothing(self):
        names = claude_code_tool_names()
        self.assertFalse(any(glob_regex("Bash(rm:*)").match(n) for n in names))
        self.assertTrue(glob_regex("mcp__*__delete_*").match("mcp__fakefs__delete_file"))


class ExampleSecrets(unittest.TestCase):
    def test_no_usable_key_or_credential_is_shipped(self):
        """A placeholder Secret value is a working key (the operator hashes any non-empty value):
        the examples ship no Secret values and no virtual key at all."""
        for name, doc in example_docs():
            where = f"examples/k8s/{name}: {doc.get('kind')} {doc.get('metadata', {}).get('name')}"
            with self.subTest(where):
                if doc.get("kind") == "Secret":
                    values = {**(doc.get("data") or {}), **(doc.get("stringData") or {})}
                    self.assertEqual({k: v for k, v in values.items() if str(v).strip()}, {}, "a Secret with values")
                self.assertNotRegex(json.dumps(doc), r'"tg_[A-Za-z0-9_]', "a virtual key in an example")

    def test_referenced_secrets_say_how_to_create_them(self):
        text = "\n".join(p.read_text() for p in sorted(EXAMPLES.glob("*.yaml")))
        shipped = {(d["metadata"].get("namespace"), d["metadata"]["name"]) for _, d in example_docs() if d["kind"] == "Secret"}
        referenced = []
        for _, doc in example_docs():
            spec = doc.get("spec") or {}
            if doc["kind"] == "VirtualKey" and spec.get("secretRef"):
                referenced.append((doc["metadata"]["namespace"], spec["secretRef"]["name"]))
            ref = (spec.get("credential") or {}).get("secretKeyRef")
            if ref:
                referenced.append((tc.NAMESPACE, ref["name"]))
        self.assertGreaterEqual(len(referenced), 3)
        for namespace, name in referenced:
            with self.subTest(secret=f"{namespace}/{name}"):
                self.assertNotIn((namespace, name), shipped)
                self.assertRegex(text, rf"kubectl -n {re.escape(namespace)} create secret generic {re.escape(name)} ")


class ExampleNamespaces(unittest.TestCase):
    def namespaces_used(self) -> set[str]:
        used = set()
        for _, doc in example_docs():
            if doc["metadata"].get("namespace"):
                used.add(doc["metadata"]["namespace"])
            scope = (doc.get("spec") or {}).get("scope") or {}
            if doc["kind"] == "Budget" and scope.get("namespace"):
                used.add(scope["namespace"])
        return used

    def test_every_namespace_is_created(self):
        created = {d["metadata"]["name"] for name, d in example_docs() if d["kind"] == "Namespace" and name == "namespaces.yaml"}
        used = self.namespaces_used()
        self.assertTrue(used)
        self.assertEqual(used - created - {tc.NAMESPACE}, set(), "namespaces the examples use but never create")
        for name, doc in example_docs():
            if doc["kind"] == "Namespace":
                kubernetes_validate.validate(doc, tc.K8S_VERSION, strict=True)

    def test_documented_apply_order(self):
        """examples/k8s/README.md applies namespaces.yaml before the rest, and names every file."""
        text = (EXAMPLES / "README.md").read_text()
        applied = re.findall(r"-f examples/k8s/(\S+\.yaml)", text)
        self.assertEqual(applied[0], "namespaces.yaml")
        self.assertEqual(sorted(applied), sorted(p.name for p in EXAMPLES.glob("*.yaml")))
        first, rest = text.index("-f examples/k8s/namespaces.yaml"), text.index("-f examples/k8s/virtual-keys.yaml")
        self.assertLess(first, rest)
        self.assertGreater(text[first:rest].count("kubectl apply"), 0, "namespaces.yaml in its own, earlier kubectl apply")


def cluster_from_commands(text: str) -> list[dict]:
    """The Namespaces and Secrets the kubectl commands in `text` create (`kubectl create
    namespace`, `kubectl label namespace`, `kubectl -n NS create secret generic NAME
    --from-literal=KEY=...`, `kubectl -n NS label secret NAME K=V`), with stand-in values."""
    namespaces: dict[str, dict] = {}
    secrets: dict[tuple[str, str], dict] = {}
    for name in re.findall(r"kubectl create namespace ([a-z0-9-]+)", text):
        namespaces.setdefault(name, {})
    for name, key, value in re.findall(r"kubectl label namespace ([a-z0-9-]+) ([\w./-]+)=([\w.-]+)", text):
        if name in namespaces:
            namespaces[name][key] = value
    for ns, name, key in re.findall(r"kubectl -n ([a-z0-9-]+) create secret generic ([a-z0-9-]+) --from-literal=([\w.-]+)=", text):
        secrets.setdefault((ns, name), {"labels": {}, "data": {}})["data"][key] = f"tg_stand_in_for_{name}"
    for ns, name, key, value in re.findall(r"kubectl -n ([a-z0-9-]+) label secret ([a-z0-9-]+) ([\w./-]+)=([\w.-]+)", text):
        if (ns, name) in secrets:
            secrets[(ns, name)]["labels"][key] = value
    docs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n, "labels": labels}} for n, labels in namespaces.items()]
    docs += [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": n, "namespace": ns, "labels": s["labels"]},
              "stringData": s["data"]} for (ns, n), s in secrets.items()]
    return docs


class InstallNotes(unittest.TestCase):
    """Each walk-through that ends by reading a generated key (`kubectl -n NS get secret
    tollgate-vk-NAME`) creates that key, in a namespace it created first; with the operator
    binary (make chart-test), everything the walk-through applies, plus the Namespaces and
    Secrets its own commands (and the applied files' comments) create, compiles with every
    resource Ready, that key included."""

    def flow(self, text: str, where: str):
        reads = re.findall(r"kubectl -n (\S+) get secret tollgate-vk-([a-z0-9-]+)", text)
        self.assertTrue(reads, where)
        for namespace, name in reads:
            with self.subTest(f"{where}: {namespace}/tollgate-vk-{name}"):
                before = text[:text.index(f"-n {namespace} get secret tollgate-vk-{name}")]
                applied = list(dict.fromkeys(re.findall(r"-f (examples/k8s/\S+\.yaml)", before)))
                docs = [(f, d) for f in applied for d in yaml.safe_load_all((ROOT / f).read_text()) if d]
                docs += [("inline", d) for d in tollgate_docs_in(before)]
                keys = [(f, d) for f, d in docs if d["kind"] == "VirtualKey" and d["metadata"]["name"] == name
                        and d["metadata"].get("namespace") == namespace]
                self.assertEqual(len(keys), 1, f"no step creates VirtualKey {namespace}/{name}")
                key_file, key = keys[0]
                self.assertNotIn("secretRef", key["spec"], "the key must be generated (no secretRef)")
                created = set(re.findall(r"kubectl create namespace (\S+)", before))
                created |= {d["metadata"]["name"] for f, d in docs if d["kind"] == "Namespace"
                            and (key_file == "inline" or applied.index(f) < applied.index(key_file))}
                self.assertIn(namespace, created, "the namespace is created before the key")
                self.compiles(namespace, name, [d for _, d in docs],
                              before + "".join((ROOT / f).read_text() for f in applied))

    def compiles(self, namespace: str, name: str, docs: list[dict], commands: str):
        binary = os.environ.get("TOLLGATE_OPERATOR_BIN")
        if not binary:
            print(f"  {namespace}/{name}: not compiled (TOLLGATE_OPERATOR_BIN is not set; make chart-test sets it)")
            return
        docs = docs + cluster_from_commands(commands)
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
            yaml.safe_dump_all(docs, f)
            f.flush()
            proc = subprocess.run([binary, "compile", "-f", f.name, "-o", "json", "--strict", "--organization", "acme",
                                   "--policy-namespace", tc.NAMESPACE, "--now", "2026-11-15T00:00:00Z"],
                                  capture_output=True, text=True, timeout=60)
        self.assertIn(proc.returncode, (0, 1), proc.stderr)
        rows = json.loads(proc.stdout)["resources"]
        not_ready = [f"{r['kind']} {r.get('namespace') or ''}/{r['name']}: {r['reason']}: {r['message']}" for r in rows if not r["ready"]]
        self.assertEqual(not_ready, [])
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertTrue(any(r["kind"] == "VirtualKey" and r.get("namespace") == namespace and r["name"] == name
                            and r["ready"] for r in rows), rows)

    def test_notes(self):
        for values in (None, tc.full_values()):
            self.flow(tc.notes(values), "NOTES.txt")

    def test_examples_readme(self):
        self.flow((EXAMPLES / "README.md").read_text(), "examples/k8s/README.md")

    def test_readme_quick_start(self):
        text = README.read_text()
        start = text.index("## Kubernetes quick start")
        self.flow(text[start:text.index("\n## ", start + 1)], "README.md (Kubernetes quick start)")


class PolicyFileWording(unittest.TestCase):
    def test_examples_policy_is_a_file_not_built_in(self):
        """tollgate-proxy's --policy defaults to the relative path examples/policy.yaml
        (dataplane/src/main.rs): nothing is embedded in the binary."""
        main = (ROOT / "dataplane" / "src" / "main.rs").read_text()
        self.assertRegex(main, r'env = "TOLLGATE_POLICY", default_value = "examples/policy.yaml"')
        readme = README.read_text()
        for text, where in ((readme, "README.md"), ((ROOT / "examples" / "policy.yaml").read_text(), "examples/policy.yaml")):
            with self.subTest(where):
                self.assertNotRegex(text, r"(?i)embedded default|built-in policy|embedded policy")
        (row,) = [line for line in readme.splitlines() if line.startswith("| `--policy`")]
        self.assertIn("relative to the working directory", row)


if __name__ == "__main__":
    unittest.main()
