"""Tests of the Helm chart charts/tollgate, without a helm binary or a cluster.

Run by `make chart-test` (python -m unittest in charts/tests/.venv, see setup-python.sh).
Helm itself (v4's Go SDK, embedded in helm-python-sdk) lints and renders the chart; every
rendered document is then validated:

* Kubernetes built-in kinds (and the CRDs themselves) with kubernetes-validate in strict mode
  (unknown fields are errors) against the schemas of Kubernetes K8S_VERSION;
* each rendered CRD must equal the repository's crds/*.yaml (the keep annotation aside);
* tollgate.dev custom resources with jsonschema against the CRDs' openAPIV3Schema;
* third-party kinds (ServiceMonitor, cert-manager) have no bundled schema: checked for their
  required top-level fields, and the test says so. An unknown kind fails the test.

If TOLLGATE_OPERATOR_BIN is set, the operator also checks the rendered injection configs
(`--check-injection-config FILE`).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import helm_python
import jsonschema
import kubernetes_validate
import yaml
from helm_python import _native
from helm_python.errors import HelmError

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "tollgate"
CRDS = ROOT / "crds"
DEPLOY_RBAC = ROOT / "operator" / "deploy" / "rbac.yaml"
FULL_VALUES = CHART / "ci" / "full-values.yaml"
RELEASE = "tollgate"
NAMESPACE = "tollgate-system"

# kubernetes-validate 1.37.0 bundles the schemas of Kubernetes 1.25 .. 1.37. 1.33 is the
# oldest minor still supported upstream when this was written and has native sidecars GA.
# The chart is rendered for it too (.Capabilities.KubeVersion), as `helm install` would on
# such a cluster.
K8S_VERSION = "1.33.0"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion); below 1.29 the sidecar
# is a plain container.
OLDEST_K8S_VERSION = "1.25.0"
# Below 1.30 there is no VirtualKey owner policy, and the render fails unless that is acknowledged.
OLD_CLUSTER = {"keyOwnerPolicy": {"allowWithout": True}}

# Kinds whose schema kubernetes-validate does not bundle (they come from other projects'
# CRDs): only their required top-level fields are checked.
THIRD_PARTY = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "Prometheus Operator CRD",
    ("monitoring.coreos.com/v1", "PodMonitor"): "Prometheus Operator CRD",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "Prometheus Operator CRD",
    ("cert-manager.io/v1", "Certificate"): "cert-manager CRD",
    ("cert-manager.io/v1", "Issuer"): "cert-manager CRD",
    ("cert-manager.io/v1", "ClusterIssuer"): "cert-manager CRD",
}

TOLLGATE_RESOURCES = ["virtualkeys", "teams", "budgets", "modelproviders", "modelroutes", "mcpservers", "auditsinks"]
POLICY_CONFIGMAPS = ["tollgate-policy"] + [f"tollgate-policy-keys-{i:02d}" for i in range(16)]
INJECTION_KEYS = {
    "image", "imagePullPolicy", "nativeSidecar", "port", "adminPort", "resources", "securityContext",
    "ledger", "audit", "mcpUrlEnv", "logFormat", "extraEnv", "extraArgs",
}
KEEP = "helm.sh/resource-policy"

_chart: helm_python.Chart | None = None
_renders: dict[str, list[dict]] = {}
SUMMARY: dict[str, dict[str, int]] = {}


def chart() -> helm_python.Chart:
    global _chart
    if _chart is None:
        _chart = helm_python.Chart.load(CHART)
    return _chart


def full_values() -> dict:
    return yaml.safe_load(FULL_VALUES.read_text())


def render_manifests(values: dict | None = None, kube_version: str = K8S_VERSION, the_chart: helm_python.Chart | None = None,
                     api_versions: list[str] | None = None) -> dict[str, str]:
    """Template path -> rendered text, for a cluster of `kube_version` (serving `api_versions`
    besides the built-in group versions, as `helm template --api-versions` adds them).

    helm-python-sdk's Chart.render does not expose the kube_version and api_versions options
    its native call takes, so the native call is made here.
    """
    opts = {"name": RELEASE, "namespace": NAMESPACE, "kube_version": f"v{kube_version}"}
    if api_versions:
        opts["api_versions"] = api_versions
    payload = None if values is None else json.dumps(values)
    return json.loads(_native.call_string("helm_render", (the_chart or chart())._raw(), payload, json.dumps(opts)))


def notes(values: dict | None = None, the_chart: helm_python.Chart | None = None) -> str:
    return next(text for path, text in render_manifests(values, the_chart=the_chart).items() if path.endswith("NOTES.txt"))


def render(values: dict | None = None, kube_version: str = K8S_VERSION, the_chart: helm_python.Chart | None = None,
           api_versions: list[str] | None = None) -> list[dict]:
    """Renders the chart and returns its documents (NOTES.txt left out)."""
    manifests = render_manifests(values, kube_version, the_chart, api_versions)
    docs = []
    for template, text in sorted(manifests.items()):
        if template.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc is not None:
                doc["__template"] = template
                docs.append(doc)
    return docs


def rendered(label: str) -> list[dict]:
    """The documents of a named values set, rendered once."""
    if label not in _renders:
        _renders[label] = render({"default": None, "full": full_values()}[label])
    return _renders[label]


def strip(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "__template"}


def find(docs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict], kind: str, name: str) -> dict:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def repo_crds() -> dict[str, dict]:
    crds = {}
    for path in sorted(CRDS.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        crds[doc["metadata"]["name"]] = doc
    return crds


def crd_schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> openAPIV3Schema of every version of every repository CRD."""
    schemas = {}
    for crd in repo_crds().values():
        for version in crd["spec"]["versions"]:
            api_version = f"{crd['spec']['group']}/{version['name']}"
            schemas[(api_version, crd["spec"]["names"]["kind"])] = version["schema"]["openAPIV3Schema"]
    return schemas


def operator_deployment(docs: list[dict]) -> dict:
    return one(docs, "Deployment", f"{RELEASE}-operator")


def operator_args(docs: list[dict]) -> list[str]:
    return operator_deployment(docs)["spec"]["template"]["spec"]["containers"][0]["args"]


def flag_values(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == flag]


def injection_config(docs: list[dict]) -> dict:
    cm = one(docs, "ConfigMap", f"{RELEASE}-injection")
    return yaml.safe_load(cm["data"]["config.yaml"])


def rules_of(docs: list[dict]):
    for doc in docs:
        if doc["kind"] in ("Role", "ClusterRole"):
            for rule in doc.get("rules") or []:
                yield doc, rule


class Lint(unittest.TestCase):
    def test_lint_default_and_full_values(self):
        for label, values in (("default", None), ("full", full_values())):
            with self.subTest(values=label):
                report = helm_python.lint(CHART, values, namespace=NAMESPACE, kube_version=f"v{K8S_VERSION}")
                errors = [m for m in report["messages"] if m["severity"] >= 3]
                self.assertEqual(report["errors"], [], report)
                self.assertEqual(errors, [], report)
                for m in report["messages"]:
                    print(f"  lint ({label}): severity {m['severity']} {m['path']}: {m['error'].strip()}")


class Validate(unittest.TestCase):
    """Every rendered document of both values files, each against the schema that fits it."""

    def validate_all(self, label: str, docs: list[dict] | None = None, kube_version: str = K8S_VERSION):
        docs = rendered(label) if docs is None else docs
        schemas = crd_schemas()
        repo = repo_crds()
        counts = {"documents": len(docs), "kubernetes-validate strict": 0, "CRD openAPIV3Schema": 0,
                  "CRD equal to crds/": 0, "required fields only": 0}
        for doc in docs:
            obj = strip(doc)
            key = (obj.get("apiVersion"), obj.get("kind"))
            where = f"{doc['__template']}: {key[1]} {obj.get('metadata', {}).get('name')}"
            with self.subTest(values=label, doc=where):
                if key[0] and key[0].split("/")[0] == "tollgate.dev":
                    self.assertIn(key, schemas, f"{where}: no CRD in crds/ defines it")
                    jsonschema.validate(obj.get("spec", {}), schemas[key]["properties"]["spec"])
                    counts["CRD openAPIV3Schema"] += 1
                elif key in THIRD_PARTY:
                    for field in ("apiVersion", "kind", "spec"):
                        self.assertIn(field, obj, where)
                    self.assertTrue(obj.get("metadata", {}).get("name"), f"{where}: metadata.name")
                    print(f"  {label}: {where}: not schema-validated ({THIRD_PARTY[key]}, no bundled "
                          "schema); apiVersion, kind, metadata.name and spec checked")
                    counts["required fields only"] += 1
                else:
                    try:
                        kubernetes_validate.validate(obj, kube_version, strict=True)
                    except kubernetes_validate.SchemaNotFoundError as e:
                        self.fail(f"{where}: no schema and not a known third-party kind: {e.message}")
                    except kubernetes_validate.ValidationError as e:
                        self.fail(f"{where}: {e.message} at {list(e.path)}")
                    counts["kubernetes-validate strict"] += 1
                    if obj["kind"] == "CustomResourceDefinition":
                        name = obj["metadata"]["name"]
                        self.assertIn(name, repo, f"{where}: not in crds/")
                        got = copy.deepcopy(obj)
                        annotations = got["metadata"].get("annotations", {})
                        annotations.pop(KEEP, None)
                        if not annotations:
                            got["metadata"].pop("annotations", None)
                        self.assertEqual(got, repo[name], f"{where} differs from crds/")
                        counts["CRD equal to crds/"] += 1
        SUMMARY[label] = counts

    def test_default_values(self):
        self.validate_all("default")

    def test_full_values(self):
        self.validate_all("full")

    def test_oldest_supported_version(self):
        """What the chart renders for the oldest Kubernetes it claims, against that version's schemas
        (there, without the VirtualKey owner policy, only with keyOwnerPolicy.allowWithout:
        test_tenancy)."""
        for label, values in (("default", {}), ("full", full_values())):
            with self.subTest(values=label):
                values = {**values, "keyOwnerPolicy": {"allowWithout": True}}
                self.validate_all(f"{label} on {OLDEST_K8S_VERSION}", render(values, OLDEST_K8S_VERSION), OLDEST_K8S_VERSION)


class Crds(unittest.TestCase):
    def test_files_crds_match_repository_crds(self):
        chart_copy = {p.name: p.read_bytes() for p in (CHART / "files" / "crds").glob("*.yaml")}
        repo = {p.name: p.read_bytes() for p in CRDS.glob("*.yaml")}
        self.assertEqual(sorted(chart_copy), sorted(repo), "charts/tollgate/files/crds/ has other files than crds/; run `make crds`")
        for name in repo:
            self.assertEqual(chart_copy[name], repo[name], f"charts/tollgate/files/crds/{name} differs from crds/{name}; run `make crds`")

    def test_all_crds_rendered_with_keep(self):
        crds = find(rendered("default"), "CustomResourceDefinition")
        self.assertEqual(sorted(c["metadata"]["name"] for c in crds), sorted(repo_crds()))
        for crd in crds:
            self.assertEqual(crd["metadata"]["annotations"][KEEP], "keep")

    def test_keep_and_install_switches(self):
        no_keep = find(render({"crds": {"keep": False}}), "CustomResourceDefinition")
        self.assertEqual(len(no_keep), len(repo_crds()))
        for crd in no_keep:
            self.assertNotIn(KEEP, crd["metadata"].get("annotations", {}))
        self.assertEqual(find(render({"crds": {"install": False}}), "CustomResourceDefinition"), [])


class Contents(unittest.TestCase):
    OPTIONAL = ["ServiceMonitor", "PodMonitor", "PrometheusRule", "Certificate", "Issuer"]

    def test_default_render_has_no_optional_parts(self):
        docs = rendered("default")
        for kind in self.OPTIONAL:
            self.assertEqual(find(docs, kind), [], kind)
        # No agent namespace is listed by default: the NetworkPolicies are the release namespace's
        # own (the gateway's ingress and the ledger's).
        self.assertEqual(sorted((p["metadata"]["namespace"], p["metadata"]["name"]) for p in find(docs, "NetworkPolicy")),
                         [(NAMESPACE, f"{RELEASE}-gateway"), (NAMESPACE, f"{RELEASE}-ledger")])
        self.assertEqual(len(find(docs, "MutatingWebhookConfiguration")), 1)

    def test_operator_pod_disruption_budget(self):
        pdb = one(rendered("default"), "PodDisruptionBudget", f"{RELEASE}-operator")
        self.assertEqual(pdb["spec"]["minAvailable"], 1)
        deployment = one(rendered("default"), "Deployment", f"{RELEASE}-operator")
        self.assertEqual(pdb["spec"]["selector"]["matchLabels"], deployment["spec"]["selector"]["matchLabels"])
        single = render({"operator": {"replicas": 1}})
        self.assertEqual(find(single, "PodDisruptionBudget", f"{RELEASE}-operator"), [], "a PDB over one replica blocks every drain")

    def test_full_render_has_them(self):
        docs = rendered("full")
        for kind in self.OPTIONAL + ["NetworkPolicy", "ConfigMap"]:
            self.assertTrue(find(docs, kind), kind)
        gateway = one(docs, "Deployment", f"{RELEASE}-gateway")
        self.assertEqual(gateway["spec"]["replicas"], 3)
        service = one(docs, "Service", f"{RELEASE}-gateway")
        self.assertEqual(service["spec"]["type"], "LoadBalancer")
        self.assertEqual(service["spec"]["ports"][0]["port"], 443)
        self.assertIn("service.beta.kubernetes.io/aws-load-balancer-internal", service["metadata"]["annotations"])
        certificate = one(docs, "Certificate", f"{RELEASE}-webhook")
        svc = f"{RELEASE}-webhook"
        self.assertEqual(certificate["spec"]["secretName"], f"{RELEASE}-webhook-tls")
        self.assertEqual(certificate["spec"]["dnsNames"], [svc, f"{svc}.{NAMESPACE}", f"{svc}.{NAMESPACE}.svc", f"{svc}.{NAMESPACE}.svc.cluster.local"])
        self.assertEqual(certificate["spec"]["issuerRef"], {"kind": "Issuer", "name": f"{RELEASE}-ca"})
        self.assertEqual(one(docs, "Issuer", f"{RELEASE}-ca")["spec"]["ca"]["secretName"], f"{RELEASE}-ca")
        self.assertIn("selfSigned", one(docs, "Issuer", f"{RELEASE}-selfsigned")["spec"])
        monitor = one(docs, "ServiceMonitor", f"{RELEASE}-operator")
        self.assertEqual(monitor["metadata"]["labels"]["release"], "prometheus")
        metrics = one(docs, "Service", f"{RELEASE}-operator-metrics")
        for k, v in monitor["spec"]["selector"]["matchLabels"].items():
            self.assertEqual(metrics["metadata"]["labels"].get(k), v, "ServiceMonitor does not select the metrics Service")

    def test_given_issuer_replaces_the_chart_ca(self):
        values = full_values()
        values["webhook"]["certManager"]["issuerRef"] = {"kind": "ClusterIssuer", "name": "corp-ca"}
        docs = render(values)
        self.assertEqual(find(docs, "Issuer"), [])
        self.assertEqual(one(docs, "Certificate", f"{RELEASE}-webhook")["spec"]["issuerRef"], {"kind": "ClusterIssuer", "name": "corp-ca"})

    def test_webhooks(self):
        for label in ("default", "full"):
            docs = rendered(label)
            config = one(docs, "MutatingWebhookConfiguration", f"{RELEASE}-sidecar-injector")
            hooks = {h["name"]: h for h in config["webhooks"]}
            self.assertEqual(sorted(hooks), ["inject-opt-in.tollgate.dev", "inject.tollgate.dev"])
            for name, value, path in (("inject.tollgate.dev", "enabled", "/mutate/enabled"),
                                      ("inject-opt-in.tollgate.dev", "opt-in", "/mutate/opt-in")):
                with self.subTest(values=label, webhook=name):
                    hook = hooks[name]
                    self.assertEqual(hook["rules"], [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"], "scope": "Namespaced"}])
                    self.assertEqual(hook["sideEffects"], "None")
                    self.assertEqual(hook["admissionReviewVersions"], ["v1"])
                    # Containers a later webhook adds get the environment too: the webhook is
                    # called again, and its patch is idempotent (operator/src/inject/tests.rs).
                    self.assertEqual(hook["reinvocationPolicy"], "IfNeeded")
                    self.assertEqual(hook["clientConfig"]["service"], {"name": f"{RELEASE}-webhook", "namespace": NAMESPACE, "path": path, "port": 443})
                    self.assertNotIn("caBundle", hook["clientConfig"])
                    exprs = {e["key"]: e for e in hook["namespaceSelector"]["matchExpressions"]}
                    self.assertEqual(exprs["tollgate.dev/inject"], {"key": "tollgate.dev/inject", "operator": "In", "values": [value]})
                    excluded = exprs["kubernetes.io/metadata.name"]
                    self.assertEqual(excluded["operator"], "NotIn")
                    self.assertIn("kube-system", excluded["values"])
                    self.assertIn(NAMESPACE, excluded["values"])
                    if label == "default":
                        self.assertEqual(hook["failurePolicy"], "Fail")
                        self.assertEqual(hook["timeoutSeconds"], 5)
                    else:
                        self.assertEqual(hook["failurePolicy"], "Ignore")
                        self.assertEqual(hook["timeoutSeconds"], 10)
                        self.assertIn("monitoring", excluded["values"])
                        self.assertIn("cert-manager", excluded["values"])
            annotations = config["metadata"].get("annotations") or {}
            if label == "default":
                self.assertNotIn("cert-manager.io/inject-ca-from", annotations)
            else:
                self.assertEqual(annotations["cert-manager.io/inject-ca-from"], f"{NAMESPACE}/{RELEASE}-webhook")
            service = one(docs, "Service", f"{RELEASE}-webhook")
            self.assertEqual(service["spec"]["ports"], [{"name": "https", "port": 443, "targetPort": "webhook", "protocol": "TCP"}])

    def test_webhook_disabled(self):
        docs = render({"webhook": {"enabled": False}})
        for kind, name in (("MutatingWebhookConfiguration", f"{RELEASE}-sidecar-injector"),
                           ("ConfigMap", f"{RELEASE}-injection"), ("Service", f"{RELEASE}-webhook")):
            self.assertEqual(find(docs, kind, name), [], kind)
        args = operator_args(docs)
        self.assertFalse([a for a in args if a.startswith("--webhook") or a == "--injection-config"], args)
        self.assertFalse(any("mutatingwebhookconfigurations" in r["resources"] for _, r in rules_of(docs)))


ALERTS_FILE = CHART / "files" / "alerts.yaml"
DASHBOARD_FILE = CHART / "files" / "dashboards" / "tollgate.json"


def chart_defaults() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def rules_with(alerts: dict) -> dict:
    """files/alerts.yaml with each `${alerts.NAME}` replaced by `alerts[NAME]` (what
    templates/prometheusrule.yaml does, and tests/tests/observability.rs with the defaults)."""
    text = ALERTS_FILE.read_text()
    for name, value in alerts.items():
        if not isinstance(value, dict):
            text = text.replace("${alerts.%s}" % name, str(value))
    assert "${" not in text, text
    return yaml.safe_load(text)


class Observability(unittest.TestCase):
    """The dashboard ConfigMap, the PrometheusRule, the gateway's ServiceMonitor and the
    sidecars' PodMonitor: absent by default, each valid and wired to the others when enabled.
    (tests/tests/observability.rs parses their PromQL and checks every metric is exported.)"""

    ALL_ON = {"dashboards": {"enabled": True}, "alerts": {"enabled": True},
              "monitoring": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}}}

    def test_absent_by_default(self):
        docs = rendered("default")
        for kind in ("PodMonitor", "PrometheusRule", "ServiceMonitor"):
            self.assertEqual(find(docs, kind), [], kind)
        self.assertEqual(find(docs, "ConfigMap", f"{RELEASE}-dashboards"), [])

    def test_all_render_and_validate(self):
        docs = render(self.ALL_ON)
        Validate.validate_all(self, "observability on", docs)
        for kind, name in (("ConfigMap", f"{RELEASE}-dashboards"), ("PrometheusRule", RELEASE),
                           ("ServiceMonitor", f"{RELEASE}-gateway"), ("PodMonitor", f"{RELEASE}-sidecars")):
            one(docs, kind, name)
        # Only the gateway's ServiceMonitor: the operator's has its own switch.
        self.assertEqual(find(docs, "ServiceMonitor", f"{RELEASE}-operator"), [])

    def test_dashboard_configmap(self):
        cm = one(render({"dashboards": {"enabled": True}}), "ConfigMap", f"{RELEASE}-dashboards")
        self.assertEqual(cm["metadata"]["namespace"], NAMESPACE)
        self.assertEqual(cm["metadata"]["labels"]["grafana_dashboard"], "1")
        shipped = json.loads(DASHBOARD_FILE.read_text())
        self.assertEqual(json.loads(cm["data"]["tollgate.json"]), shipped)
        self.assertEqual([v["name"] for v in shipped["templating"]["list"]][0], "datasource")
        self.assertEqual(shipped["templating"]["list"][0]["type"], "datasource")
        custom = render({"dashboards": {"enabled": True, "label": "grafana.com/dashboard", "labelValue": "tollgate",
                                        "namespace": "monitoring", "annotations": {"grafana_folder": "AI"}}})
        cm = one(custom, "ConfigMap", f"{RELEASE}-dashboards")
        self.assertEqual(cm["metadata"]["labels"]["grafana.com/dashboard"], "tollgate")
        self.assertNotIn("grafana_dashboard", cm["metadata"]["labels"])
        self.assertEqual(cm["metadata"]["namespace"], "monitoring")
        self.assertEqual(cm["metadata"]["annotations"], {"grafana_folder": "AI"})
        Validate.validate_all(self, "dashboards custom", custom)

    def test_prometheus_rule_is_the_shipped_file(self):
        rule = one(render({"alerts": {"enabled": True, "labels": {"release": "prometheus"}}}), "PrometheusRule", RELEASE)
        self.assertEqual(rule["metadata"]["labels"]["release"], "prometheus")
        self.assertEqual(rule["spec"], rules_with(chart_defaults()["alerts"]))
        alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
        for name in ("TollgateBudgetThresholdCrossed", "TollgateBudgetExhausted", "TollgatePolicyReloadFailing",
                     "TollgateLedgerErrors", "TollgateAuditRecordsDropped", "TollgateAuditSinkLagGrowing",
                     "TollgateProviderErrorRate", "TollgateSidecarPolicyBehind"):
            self.assertIn(name, alerts)
        for name, r in alerts.items():
            with self.subTest(alert=name):
                self.assertIn("for", r)
                self.assertIn(r["labels"]["severity"], ("critical", "warning", "info"))
                self.assertTrue(r["annotations"]["summary"] and r["annotations"]["description"])
        # Prometheus' own templates reach Prometheus untouched.
        self.assertIn("{{ $labels.budget }}", alerts["TollgateBudgetExhausted"]["annotations"]["summary"])
        self.assertIn('job="tollgate-sidecar"', alerts["TollgateSidecarPolicyBehind"]["expr"])

    def test_alert_thresholds_are_values(self):
        values = {"enabled": True, "budgetWarningRatio": 0.65, "providerErrorRatio": 0.2, "auditSinkLagRecords": 777,
                  "policyBehindFor": "45m", "gatewaySelector": 'job="gw", cluster="a"', "sidecarSelector": 'job="sc"'}
        rule = one(render({"alerts": values}), "PrometheusRule", RELEASE)
        alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
        self.assertIn(">= 0.65", alerts["TollgateBudgetThresholdCrossed"]["expr"])
        self.assertIn("> 0.2", alerts["TollgateProviderErrorRate"]["expr"])
        self.assertIn("> 777", alerts["TollgateAuditSinkLagGrowing"]["expr"])
        self.assertEqual(alerts["TollgateSidecarPolicyBehind"]["for"], "45m")
        self.assertIn('tollgate_budget_spent_micro_usd{job="gw", cluster="a"}', alerts["TollgateBudgetExhausted"]["expr"])
        self.assertIn('{job="sc"}', alerts["TollgateSidecarPolicyBehind"]["expr"])
        self.assertNotIn("tollgate-gateway", json.dumps(rule["spec"]))
        with self.assertRaises(HelmError):
            render({"alerts": {"enabled": True, "budgetWarningRatio": 1.5}})
        with self.assertRaises(HelmError):
            render({"alerts": {"enabled": True, "gatewaySelector": "{job=\"x\"}"}})

    def test_gateway_service_monitor_selects_the_admin_service(self):
        docs = render({"monitoring": {"serviceMonitor": {"enabled": True, "interval": "10s", "labels": {"release": "kps"}}}})
        monitor = one(docs, "ServiceMonitor", f"{RELEASE}-gateway")
        service = one(docs, "Service", f"{RELEASE}-gateway-admin")
        self.assertEqual(monitor["metadata"]["labels"]["release"], "kps")
        for k, v in monitor["spec"]["selector"]["matchLabels"].items():
            self.assertEqual(service["metadata"]["labels"].get(k), v, "ServiceMonitor does not select the admin Service")
        operator_metrics = one(docs, "Service", f"{RELEASE}-operator-metrics")
        self.assertFalse(all(operator_metrics["metadata"]["labels"].get(k) == v
                             for k, v in monitor["spec"]["selector"]["matchLabels"].items()), "selects the operator too")
        self.assertEqual(monitor["spec"]["namespaceSelector"], {"matchNames": [NAMESPACE]})
        endpoint, = monitor["spec"]["endpoints"]
        self.assertIn(endpoint["port"], [p["name"] for p in service["spec"]["ports"]])
        self.assertEqual((endpoint["path"], endpoint["interval"]), ("/metrics", "10s"))
        job = [r["replacement"] for r in endpoint["relabelings"] if r.get("targetLabel") == "job"]
        self.assertEqual(job, ["tollgate-gateway"])
        self.assertIn(f'job="{job[0]}"', chart_defaults()["alerts"]["gatewaySelector"])
        dashboard_job = json.loads(DASHBOARD_FILE.read_text())["templating"]["list"][1]
        self.assertEqual(dashboard_job["current"]["value"], job)
        with self.assertRaisesRegex(HelmError, "gateway.enabled"):
            render({"gateway": {"enabled": False}, "monitoring": {"serviceMonitor": {"enabled": True}}})

    def test_pod_monitor_selects_injected_sidecars(self):
        docs = render({"monitoring": {"podMonitor": {"enabled": True, "namespaceSelector": {"matchNames": ["team-a"]}}}})
        monitor = one(docs, "PodMonitor", f"{RELEASE}-sidecars")
        self.assertEqual(monitor["spec"]["namespaceSelector"], {"matchNames": ["team-a"]})
        self.assertEqual(one(render({"monitoring": {"podMonitor": {"enabled": True}}}), "PodMonitor", f"{RELEASE}-sidecars")
                         ["spec"]["namespaceSelector"], {"any": True})
        endpoint, = monitor["spec"]["podMetricsEndpoints"]
        # What the webhook sets (operator/src/inject): the sidecar's admin port name and the
        # status annotation on the pods it injected.
        patch = (ROOT / "operator" / "src" / "inject" / "patch.rs").read_text()
        inject = (ROOT / "operator" / "src" / "inject" / "mod.rs").read_text()
        self.assertIn(f'name: Some("{endpoint["port"]}".to_owned())', patch)
        self.assertIn('pub const STATUS_ANNOTATION: &str = "tollgate.dev/status";', inject)
        self.assertIn('Value::String("injected".to_owned())', patch)
        keep, job = endpoint["relabelings"]
        self.assertEqual(keep, {"action": "keep", "sourceLabels": ["__meta_kubernetes_pod_annotation_tollgate_dev_status"],
                                "regex": "injected"})
        self.assertEqual(job["targetLabel"], "job")
        self.assertIn(f'job="{job["replacement"]}"', chart_defaults()["alerts"]["sidecarSelector"])
        self.assertEqual(endpoint["path"], "/metrics")


class Operator(unittest.TestCase):
    COMMON = {
        "--policy-namespace": NAMESPACE,
        "--listen": "[::]:8080",
        "--webhook-listen": "[::]:9443",
        "--max-key-shards": "16",
        "--webhook-secret": f"{RELEASE}-webhook-tls",
        "--webhook-configuration": f"{RELEASE}-sidecar-injector",
        "--webhook-service": f"{RELEASE}-webhook",
        "--injection-config": "/etc/tollgate/injection/config.yaml",
        "--inject-namespace-label": "tollgate.dev/inject",
        "--credentials-secret": "tollgate-credentials",
    }

    def check_flags(self, args, expected):
        for flag, value in expected.items():
            self.assertEqual(flag_values(args, flag), [value], f"{flag} in {args}")

    def test_default_args(self):
        docs = rendered("default")
        args = operator_args(docs)
        self.check_flags(args, {**self.COMMON, "--log-format": "json", "--resync-secs": "300", "--webhook-certs": "self-managed",
                                "--sidecar-mode": "gateway", "--gateway-url": f"http://{RELEASE}-gateway.{NAMESPACE}.svc:8080",
                                "--spend-url": f"http://{RELEASE}-gateway-admin.{NAMESPACE}.svc:9090"})
        for absent in ("--organization", "--no-leader-election", "--webhook-cert-dir", "--mirror-secret"):
            self.assertNotIn(absent, args)
        deployment = operator_deployment(docs)
        self.assertEqual(deployment["spec"]["replicas"], 2)
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        self.assertEqual({e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]},
                         {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"})
        self.assertEqual({p["name"]: p["containerPort"] for p in container["ports"]}, {"http": 8080, "webhook": 9443})
        self.assertEqual(container["livenessProbe"]["httpGet"], {"path": "/healthz", "port": "http"})
        self.assertEqual(container["readinessProbe"]["httpGet"], {"path": "/readyz", "port": "http"})
        sc = container["securityContext"]
        self.assertTrue(sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"])
        self.assertFalse(sc["allowPrivilegeEscalation"])
        self.assertEqual(sc["capabilities"]["drop"], ["ALL"])
        self.assertEqual(sc["seccompProfile"]["type"], "RuntimeDefault")
        self.assertEqual(container["image"], "ghcr.io/tollgate-dev/tollgate-operator:0.1.0")
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        self.assertEqual(mounts.get("/etc/tollgate/injection"), "injection-config")
        self.assertNotIn("/var/run/tollgate/webhook-tls", mounts)
        volumes = {v["name"]: v for v in pod["volumes"]}
        self.assertEqual(volumes["injection-config"]["configMap"]["name"], f"{RELEASE}-injection")

    def test_full_args(self):
        docs = rendered("full")
        args = operator_args(docs)
        self.check_flags(args, {**self.COMMON, "--log-format": "text", "--resync-secs": "120", "--organization": "acme",
                                "--webhook-certs": "files", "--webhook-cert-dir": "/var/run/tollgate/webhook-tls",
                                "--mirror-secret": "tollgate-redis/url", "--sidecar-mode": "direct"})
        self.assertNotIn("--gateway-url", args)
        # Chart-wide budget notification targets.
        self.assertEqual(flag_values(args, "--cluster-name"), ["prod-eu"])
        self.assertEqual(flag_values(args, "--notify-webhook-url"), ["https://hooks.example.com/tollgate"])
        self.assertEqual(flag_values(args, "--notify-webhook-secret"), ["budget-hooks/hmac"])
        self.assertEqual(flag_values(args, "--notify-slack-secret"), ["budget-hooks/slack-url"])
        # Given spend URLs replace the gateway's admin Service.
        self.assertEqual(flag_values(args, "--spend-url"), full_values()["operator"]["spendUrls"])
        pod = operator_deployment(docs)["spec"]["template"]["spec"]
        mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
        self.assertEqual(mounts["/var/run/tollgate/webhook-tls"], "webhook-tls")
        volumes = {v["name"]: v for v in pod["volumes"]}
        self.assertEqual(volumes["webhook-tls"]["secret"]["secretName"], f"{RELEASE}-webhook-tls")
        self.assertEqual(pod["nodeSelector"], {"kubernetes.io/os": "linux"})
        self.assertEqual(pod["tolerations"][0]["key"], "dedicated")
        self.assertEqual(operator_deployment(docs)["spec"]["template"]["metadata"]["annotations"]["example.com/team"], "platform")

    def test_notifications_need_their_secret_and_are_off_by_default(self):
        self.assertNotIn("--notify-webhook-url", operator_args(rendered("default")))
        with self.assertRaisesRegex(HelmError, "notifications.webhook.secret is required"):
            render({"notifications": {"webhook": {"url": "https://hooks.example.com/x"}}})
        with self.assertRaisesRegex(HelmError, "secret"):
            chart().validate_schema({"notifications": {"slack": {"secret": "no-key-part"}}})

    def test_no_leader_election(self):
        args = operator_args(render({"operator": {"replicas": 1, "leaderElection": False}}))
        self.assertIn("--no-leader-election", args)
        with self.assertRaisesRegex(HelmError, "leaderElection"):
            render({"operator": {"replicas": 2, "leaderElection": False}})

    def test_checksum_follows_injection_config(self):
        def checksum(values):
            return operator_deployment(render(values))["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        self.assertNotEqual(checksum(None), checksum({"injection": {"port": 8181}}))


class Injection(unittest.TestCase):
    def test_documented_keys_and_defaults(self):
        config = injection_config(rendered("default"))
        self.assertEqual(set(config), INJECTION_KEYS)
        self.assertEqual(set(config["ledger"]), {"url", "secretKey"})
        self.assertEqual(config["image"], "ghcr.io/tollgate-dev/tollgate-proxy:0.1.0")
        self.assertEqual(config["imagePullPolicy"], "IfNotPresent")
        self.assertIs(config["nativeSidecar"], True)
        # Clear of the ports agents' own servers take (8080, 9090, ...).
        self.assertEqual((config["port"], config["adminPort"]), (16080, 16090))
        self.assertEqual(config["resources"], {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}})
        self.assertTrue(config["securityContext"]["runAsNonRoot"])
        self.assertEqual(config["ledger"], {"url": "", "secretKey": ""})
        self.assertIs(config["audit"], True)
        self.assertEqual(config["mcpUrlEnv"], "TOLLGATE_MCP_URL")
        self.assertEqual(config["logFormat"], "json")
        self.assertEqual((config["extraEnv"], config["extraArgs"]), ([], []))

    def test_full_values(self):
        config = injection_config(rendered("full"))
        self.assertEqual(set(config), INJECTION_KEYS)
        self.assertEqual(config["ledger"], {"url": "", "secretKey": "tollgate-redis_url"})
        self.assertIs(config["nativeSidecar"], False)
        self.assertEqual(config["port"], 18080)
        self.assertEqual(config["extraEnv"], [{"name": "TOLLGATE_LOG", "value": "debug"}])
        self.assertEqual(config["extraArgs"], ["--max-body-bytes", "16777216"])

    def test_plain_redis_url(self):
        direct = injection_config(render({"sidecar": {"mode": "direct"}, "ledger": {"redis": {"url": "redis://redis.tollgate:6379"}}}))
        self.assertEqual(direct["ledger"], {"url": "redis://redis.tollgate:6379", "secretKey": ""})
        # Gateway mode: the sidecar forwards to the gateway, which alone uses the ledger.
        gateway = injection_config(render({"ledger": {"redis": {"url": "redis://redis.tollgate:6379"}}}))
        self.assertEqual(gateway["ledger"], {"url": "", "secretKey": ""})

    def test_contradictions_fail(self):
        with self.assertRaisesRegex(HelmError, "not both"):
            render({"ledger": {"redis": {"url": "redis://r:6379", "existingSecret": {"name": "s"}}}})
        with self.assertRaisesRegex(HelmError, "must differ"):
            render({"injection": {"port": 16090}})

    @unittest.skipUnless(os.environ.get("TOLLGATE_OPERATOR_BIN"), "TOLLGATE_OPERATOR_BIN is not set (make chart-test sets it)")
    def test_operator_accepts_rendered_configs(self):
        binary = os.environ["TOLLGATE_OPERATOR_BIN"]
        for label in ("default", "full"):
            cm = one(rendered(label), "ConfigMap", f"{RELEASE}-injection")
            with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
                f.write(cm["data"]["config.yaml"])
                f.flush()
                # Alone, then after the Deployment's rendered arguments (clap must accept every flag).
                for extra in ([], operator_args(rendered(label))):
                    with self.subTest(values=label, with_deployment_args=bool(extra)):
                        proc = subprocess.run([binary, *extra, "--check-injection-config", f.name], capture_output=True, text=True, timeout=60)
                        self.assertEqual(proc.returncode, 0, f"{binary} {' '.join(extra)} --check-injection-config ({label}):\n{proc.stdout}{proc.stderr}")


class Gateway(unittest.TestCase):
    def test_replicas_follow_the_ledger(self):
        """The schema: at least 2 replicas on the shared ledger, exactly 1 on the embedded one
        (each replica's embedded ledger would allow the full budget)."""
        for bad in ({"ledger": {"mode": "embedded"}, "gateway": {"replicas": 2}},
                    {"ledger": {"mode": "embedded"}},
                    {"gateway": {"replicas": 1}},
                    {"ledger": {"redis": {"url": "redis://r:6379"}}, "gateway": {"replicas": 1}}):
            with self.subTest(values=bad):
                with self.assertRaisesRegex(HelmError, "replicas"):
                    chart().validate_schema(bad)
                with self.assertRaises(HelmError):
                    render(bad)
        chart().validate_schema({"ledger": {"mode": "embedded"}, "gateway": {"replicas": 1}})

    def test_single_replica_uses_embedded_ledger(self):
        docs = render({"ledger": {"mode": "embedded"}, "gateway": {"replicas": 1}})
        env = {e["name"]: e for e in one(docs, "Deployment", f"{RELEASE}-gateway")["spec"]["template"]["spec"]["containers"][0]["env"]}
        self.assertEqual(env["TOLLGATE_LEDGER"]["value"], "file:/var/lib/tollgate/ledger.journal")
        docs = render({"ledger": {"redis": {"url": "redis://r:6379"}}})
        env = {e["name"]: e for e in one(docs, "Deployment", f"{RELEASE}-gateway")["spec"]["template"]["spec"]["containers"][0]["env"]}
        self.assertEqual(env["TOLLGATE_LEDGER"]["value"], "redis://r:6379")

    def test_embedded_contradicts_an_external_ledger(self):
        with self.assertRaisesRegex(HelmError, "ledger.mode is embedded but ledger.redis is set"):
            render({"ledger": {"mode": "embedded", "redis": {"url": "redis://r:6379"}}, "gateway": {"replicas": 1}})

    def test_mcp_sessions_stick_to_one_replica(self):
        """MCP sessions (Mcp-Session-Id) live in one gateway replica's memory: a later request of
        a session on another replica gets 404 "session not found". The client-facing Service
        keeps a client on one replica for longer than a session may idle (30 minutes)."""
        for label in ("default", "full"):
            with self.subTest(values=label):
                spec = one(rendered(label), "Service", f"{RELEASE}-gateway")["spec"]
                self.assertEqual(spec["sessionAffinity"], "ClientIP")
                timeout = spec["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"]
                self.assertGreaterEqual(timeout, 30 * 60, "shorter than the MCP session idle timeout")
        spec = one(rendered("default"), "Service", f"{RELEASE}-gateway")["spec"]
        self.assertEqual(spec["sessionAffinityConfig"], {"clientIP": {"timeoutSeconds": 10800}})
        docs = render({"gateway": {"service": {"sessionAffinityTimeoutSeconds": 3600}}})
        Validate.validate_all(self, "session affinity", docs)
        spec = one(docs, "Service", f"{RELEASE}-gateway")["spec"]
        self.assertEqual(spec["sessionAffinityConfig"], {"clientIP": {"timeoutSeconds": 3600}})
        # The admin Service is stateless (spend, metrics): no affinity needed there.
        self.assertNotIn("sessionAffinity", one(docs, "Service", f"{RELEASE}-gateway-admin")["spec"])
        for bad in (0, 86401, "3h"):
            with self.subTest(sessionAffinityTimeoutSeconds=bad):
                with self.assertRaisesRegex(HelmError, "sessionAffinityTimeoutSeconds"):
                    chart().validate_schema({"gateway": {"service": {"sessionAffinityTimeoutSeconds": bad}}})

    def test_cloud_workload_identity_binds_to_the_gateway_service_account(self):
        """IRSA, GKE and Azure workload identity bind provider access to the gateway's own
        ServiceAccount (annotations) and pods (labels); its API token is never mounted."""
        annotations = {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/tollgate",
                       "iam.gke.io/gcp-service-account": "tollgate@proj.iam.gserviceaccount.com",
                       "azure.workload.identity/client-id": "11111111-1111-1111-1111-111111111111"}
        docs = render({"gateway": {"serviceAccount": {"annotations": annotations},
                                   "podLabels": {"azure.workload.identity/use": "true"}}})
        Validate.validate_all(self, "workload identity", docs)
        sa = one(docs, "ServiceAccount", f"{RELEASE}-gateway")
        self.assertEqual(sa["metadata"]["annotations"], annotations)
        self.assertIs(sa["automountServiceAccountToken"], False)
        pod = one(docs, "Deployment", f"{RELEASE}-gateway")["spec"]["template"]
        self.assertEqual(pod["spec"]["serviceAccountName"], f"{RELEASE}-gateway")
        self.assertIs(pod["spec"]["automountServiceAccountToken"], False)
        self.assertEqual(pod["metadata"]["labels"]["azure.workload.identity/use"], "true")
        # The selector does not move with extra labels (a Deployment's selector is immutable).
        selector = one(docs, "Deployment", f"{RELEASE}-gateway")["spec"]["selector"]["matchLabels"]
        self.assertNotIn("azure.workload.identity/use", selector)
        # An existing ServiceAccount instead of the chart's.
        docs = render({"gateway": {"serviceAccount": {"create": False, "name": "platform-gw"}}})
        self.assertEqual([d for d in find(docs, "ServiceAccount") if d["metadata"]["name"].endswith("-gateway")], [])
        pod = one(docs, "Deployment", f"{RELEASE}-gateway")["spec"]["template"]["spec"]
        self.assertEqual(pod["serviceAccountName"], "platform-gw")

    def test_full_gateway_pod(self):
        pod = one(rendered("full"), "Deployment", f"{RELEASE}-gateway")["spec"]["template"]["spec"]
        container = pod["containers"][0]
        self.assertEqual(container["args"], ["--policy", "/etc/tollgate/policy", "--listen", "[::]:8080",
                                             "--admin-listen", "[::]:9090", "--admin-api", "all",
                                             "--audit-dir", "/var/lib/tollgate/audit",
                                             "--ledger-outbox", "/var/lib/tollgate/ledger.outbox"])
        self.assertEqual(container["image"], "ghcr.io/tollgate-dev/tollgate-proxy:0.1.0")
        env = {e["name"]: e for e in container["env"]}
        self.assertEqual(env["TOLLGATE_LEDGER"]["valueFrom"]["secretKeyRef"], {"name": "tollgate-redis", "key": "url"})
        volumes = {v["name"]: v for v in pod["volumes"]}
        sources = volumes["policy"]["projected"]["sources"]
        self.assertEqual([s["configMap"]["name"] for s in sources], POLICY_CONFIGMAPS)
        self.assertTrue(all(s["configMap"]["optional"] is True for s in sources))
        self.assertEqual(volumes["credentials"]["secret"], {"secretName": "tollgate-credentials", "optional": True})
        self.assertEqual(volumes["state"], {"name": "state", "emptyDir": {}})
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        self.assertEqual(mounts, {"policy": "/etc/tollgate/policy", "credentials": "/var/run/tollgate/credentials", "state": "/var/lib/tollgate"})
        self.assertEqual(container["readinessProbe"]["httpGet"], {"path": "/readyz", "port": "admin"})
        self.assertEqual(container["livenessProbe"]["httpGet"], {"path": "/healthz", "port": "admin"})

    def test_network_policy(self):
        docs = rendered("full")
        policies = find(docs, "NetworkPolicy")
        self.assertEqual(sorted((p["metadata"]["namespace"], p["metadata"]["name"]) for p in policies),
                         [("ci-agents", f"{RELEASE}-agent-egress"), (NAMESPACE, f"{RELEASE}-gateway")])
        spec = one(docs, "NetworkPolicy", f"{RELEASE}-agent-egress")["spec"]
        self.assertEqual(spec["podSelector"], {})
        self.assertEqual(spec["policyTypes"], ["Egress"])
        dns, gateway, extra = spec["egress"]
        self.assertEqual(sorted(p["protocol"] for p in dns["ports"]), ["TCP", "UDP"])
        self.assertEqual(dns["to"][0]["namespaceSelector"]["matchLabels"], {"kubernetes.io/metadata.name": "kube-system"})
        gateway_pods = one(docs, "Deployment", f"{RELEASE}-gateway")["spec"]["template"]["metadata"]["labels"]
        peer = gateway["to"][0]
        self.assertEqual(peer["namespaceSelector"]["matchLabels"], {"kubernetes.io/metadata.name": NAMESPACE})
        for k, v in peer["podSelector"]["matchLabels"].items():
            self.assertEqual(gateway_pods.get(k), v, "the NetworkPolicy does not select the gateway pods")
        self.assertEqual(gateway["ports"], [{"protocol": "TCP", "port": 8080}])
        self.assertEqual(extra, full_values()["networkPolicy"]["extraEgress"][0])


def pod_spec(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"]


def containers_of(doc: dict) -> list[dict]:
    spec = pod_spec(doc)
    return spec.get("initContainers", []) + spec["containers"]


def workloads(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")]


def env_of(doc: dict, container: int = 0) -> dict[str, dict]:
    return {e["name"]: e for e in pod_spec(doc)["containers"][container].get("env", [])}


def ledger_password(docs: list[dict]) -> str:
    return base64.b64decode(one(docs, "Secret", f"{RELEASE}-ledger")["data"]["password"]).decode()


def selects(selector: dict, labels: dict) -> bool:
    """Whether a matchLabels-only label selector selects `labels`."""
    assert set(selector) <= {"matchLabels"}, selector
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


class SecureDefaults(unittest.TestCase):
    """Kubernetes, secure by default: sidecars hold no provider, Redis or SIEM secret and forward
    to the gateway, which runs replicated on one shared ledger (the chart's Valkey)."""

    def validate(self, label: str, docs: list[dict]):
        """Every document strictly, as Validate does for the default and full values."""
        Validate.validate_all(self, label, docs)

    def test_default_render(self):
        docs = rendered("default")
        gateway = one(docs, "Deployment", f"{RELEASE}-gateway")
        self.assertGreaterEqual(gateway["spec"]["replicas"], 2)
        gateway_labels = gateway["spec"]["template"]["metadata"]["labels"]
        pdb = one(docs, "PodDisruptionBudget", f"{RELEASE}-gateway")
        self.assertEqual(pdb["spec"]["minAvailable"], 1)
        self.assertEqual(pdb["spec"]["selector"]["matchLabels"], gateway["spec"]["selector"]["matchLabels"])
        admin = one(docs, "Service", f"{RELEASE}-gateway-admin")
        self.assertEqual(admin["spec"]["type"], "ClusterIP")
        self.assertEqual(admin["spec"]["ports"], [{"name": "admin", "port": 9090, "targetPort": "admin", "protocol": "TCP"}])
        self.assertTrue(selects({"matchLabels": admin["spec"]["selector"]}, gateway_labels))
        ledger = one(docs, "StatefulSet", f"{RELEASE}-ledger")
        service = one(docs, "Service", f"{RELEASE}-ledger")
        self.assertEqual(ledger["spec"]["serviceName"], service["metadata"]["name"])
        self.assertTrue(selects({"matchLabels": service["spec"]["selector"]}, ledger["spec"]["template"]["metadata"]["labels"]))
        self.assertEqual(service["spec"]["ports"], [{"name": "redis", "port": 6379, "targetPort": "redis", "protocol": "TCP"}])
        secret = one(docs, "Secret", f"{RELEASE}-ledger")
        self.assertEqual(sorted(secret["data"]), ["password", "url"])
        one(docs, "NetworkPolicy", f"{RELEASE}-ledger")
        self.validate("default (secure defaults)", docs)
        # The generated password: 32 letters and digits (safe in the URL as is).
        self.assertRegex(ledger_password(docs), r"^[A-Za-z0-9]{32}$")

    def test_gateway_mode_operator_args(self):
        docs = rendered("default")
        args = operator_args(docs)
        self.assertEqual(flag_values(args, "--sidecar-mode"), ["gateway"])
        (url,) = flag_values(args, "--gateway-url")
        service = one(docs, "Service", f"{RELEASE}-gateway")
        self.assertEqual(url, f"http://{service['metadata']['name']}.{NAMESPACE}.svc:{service['spec']['ports'][0]['port']}")
        self.assertNotIn("--mirror-secret", args)
        (spend,) = flag_values(args, "--spend-url")
        admin = one(docs, "Service", f"{RELEASE}-gateway-admin")
        self.assertEqual(spend, f"http://{admin['metadata']['name']}.{NAMESPACE}.svc:{admin['spec']['ports'][0]['port']}")
        self.assertEqual(injection_config(docs)["ledger"], {"url": "", "secretKey": ""})

    def test_gateway_mode_never_mirrors_a_ledger_secret(self):
        """Even with an external ledger URL in a Secret, gateway mode copies nothing: only the
        gateway reads it."""
        for ledger in ({"redis": {"existingSecret": {"name": "corp-redis", "key": "uri"}}},
                       {"redis": {"url": "redis://redis.corp:6379"}}):
            with self.subTest(ledger=ledger):
                docs = render({"ledger": ledger, "gateway": {"service": {"port": 80}}})
                args = operator_args(docs)
                self.assertNotIn("--mirror-secret", args)
                self.assertEqual(flag_values(args, "--gateway-url"), [f"http://{RELEASE}-gateway.{NAMESPACE}.svc:80"])
                self.assertEqual(injection_config(docs)["ledger"], {"url": "", "secretKey": ""})
                self.assertEqual(find(docs, "StatefulSet"), [], "an external ledger: no chart Valkey")
                self.assertEqual(find(docs, "Secret", f"{RELEASE}-ledger"), [])

    def test_gateway_mode_needs_the_gateway(self):
        with self.assertRaisesRegex(HelmError, "sidecar.mode gateway forwards every sidecar to the shared gateway"):
            render({"gateway": {"enabled": False}})
        # Without the webhook there are no sidecars: an operator-only install needs neither. The
        # operator still gets the mode (it compiles the policy it mirrors into agent namespaces
        # for it, and gateway mode needs a --gateway-url).
        docs = render({"gateway": {"enabled": False}, "webhook": {"enabled": False}})
        self.assertEqual(find(docs, "StatefulSet"), [])
        args = operator_args(docs)
        self.assertNotIn("--spend-url", args)
        self.assertEqual(flag_values(args, "--sidecar-mode"), ["gateway"])
        self.assertEqual(flag_values(args, "--gateway-url"), [f"http://{RELEASE}-gateway.{NAMESPACE}.svc:8080"])
        self.assertNotIn("--mirror-secret", args)

    def test_spend_urls_replace_the_admin_service(self):
        args = operator_args(render({"operator": {"spendUrls": ["http://spend.example:9090"]}}))
        self.assertEqual(flag_values(args, "--spend-url"), ["http://spend.example:9090"])

    def test_direct_without_a_shared_ledger_fails(self):
        for values in ({"sidecar": {"mode": "direct"}},
                       {"sidecar": {"mode": "direct"}, "ledger": {"mode": "embedded"}, "gateway": {"replicas": 1}}):
            with self.subTest(values=values):
                with self.assertRaisesRegex(HelmError, "sidecar.mode direct needs a shared ledger every sidecar can reach: "
                                                       "set ledger.redis.existingSecret.name"):
                    render(values)

    def test_direct_with_an_existing_secret(self):
        values = {"sidecar": {"mode": "direct"}, "ledger": {"redis": {"existingSecret": {"name": "corp-redis", "key": "uri"}}}}
        docs = render(values)
        args = operator_args(docs)
        self.assertEqual(flag_values(args, "--sidecar-mode"), ["direct"])
        self.assertEqual(flag_values(args, "--mirror-secret"), ["corp-redis/uri"])
        self.assertNotIn("--gateway-url", args)
        self.assertEqual(injection_config(docs)["ledger"], {"url": "", "secretKey": "corp-redis_uri"})
        self.assertEqual(env_of(one(docs, "Deployment", f"{RELEASE}-gateway"))["TOLLGATE_LEDGER"]["valueFrom"],
                         {"secretKeyRef": {"name": "corp-redis", "key": "uri"}})
        self.assertEqual(find(docs, "StatefulSet"), [])
        self.assertIn("Sidecar mode: direct", notes(values))
        self.validate("direct mode", docs)

    def test_notes_name_the_mode(self):
        text = notes()
        self.assertIn("Sidecar mode: gateway", text)
        self.assertIn(f"http://{RELEASE}-gateway.{NAMESPACE}.svc:8080", text)
        self.assertIn(f"Valkey StatefulSet {RELEASE}-ledger", text)

    def test_password_only_through_secret_key_refs(self):
        docs = rendered("default")
        password = ledger_password(docs)
        url = base64.b64decode(one(docs, "Secret", f"{RELEASE}-ledger")["data"]["url"]).decode()
        self.assertEqual(url, f"redis://:{password}@{RELEASE}-ledger.{NAMESPACE}.svc:6379/0")
        # Nowhere outside the Secret: not in a ConfigMap, an env value, an argument, an annotation.
        for doc in docs:
            if doc["kind"] != "Secret":
                self.assertNotIn(password, json.dumps(strip(doc)), f"{doc['kind']} {doc['metadata']['name']}")
        for cm in find(docs, "ConfigMap"):
            self.assertNotIn(password, json.dumps(cm.get("data", {})))
        refs = []
        for doc in workloads(docs):
            for container in containers_of(doc):
                for e in container.get("env", []):
                    self.assertNotIn(password, e.get("value", ""))
                    ref = e.get("valueFrom", {}).get("secretKeyRef")
                    if ref and ref["name"] == f"{RELEASE}-ledger":
                        refs.append((doc["metadata"]["name"], e["name"], ref["key"]))
                self.assertFalse(container.get("envFrom"), "envFrom would hand a workload the whole Secret")
        self.assertEqual(sorted(refs), [(f"{RELEASE}-gateway", "TOLLGATE_LEDGER", "url"),
                                        (f"{RELEASE}-ledger", "VALKEYCLI_AUTH", "password")])

    def test_ledger_network_policy_admits_only_the_gateway(self):
        """Only the gateway uses the ledger: the operator reads spend from the gateway's admin
        Service over HTTP and never connects to Valkey."""
        docs = rendered("default")
        policy = one(docs, "NetworkPolicy", f"{RELEASE}-ledger")["spec"]
        self.assertEqual(policy["policyTypes"], ["Ingress", "Egress"])
        self.assertEqual(policy["egress"], [], "the ledger needs no egress")
        ledger_labels = one(docs, "StatefulSet", f"{RELEASE}-ledger")["spec"]["template"]["metadata"]["labels"]
        self.assertTrue(selects(policy["podSelector"], ledger_labels))
        (rule,) = policy["ingress"]
        self.assertEqual(rule["ports"], [{"protocol": "TCP", "port": 6379}])
        for peer in rule["from"]:
            self.assertEqual(set(peer), {"podSelector"}, "a peer without a namespaceSelector stays in the release namespace")
        pods = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"] for d in workloads(docs)}
        admitted = sorted(name for name, labels in pods.items() if any(selects(p["podSelector"], labels) for p in rule["from"]))
        self.assertEqual(admitted, [f"{RELEASE}-gateway"])
        # Each peer names its component: an unlabelled or other pod of the release does not match.
        for peer in rule["from"]:
            self.assertEqual(peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"], "gateway")
            self.assertFalse(selects(peer["podSelector"], {"app.kubernetes.io/name": "tollgate", "app.kubernetes.io/instance": RELEASE}))
        self.assertEqual(find(render({"ledger": {"valkey": {"networkPolicy": {"enabled": False}}}}), "NetworkPolicy", f"{RELEASE}-ledger"), [])

    def test_ledger_statefulset(self):
        docs = rendered("default")
        sts = one(docs, "StatefulSet", f"{RELEASE}-ledger")
        self.assertEqual(sts["spec"]["replicas"], 1, "one primary: the ledger's scripts need every key on one node")
        pod = pod_spec(sts)
        (container,) = pod["containers"]
        self.assertRegex(container["image"], r"^valkey/valkey:\d+\.\d+\.\d+-alpine$", "a pinned official tag")
        self.assertIs(pod["automountServiceAccountToken"], False)
        psc, sc = pod["securityContext"], container["securityContext"]
        self.assertTrue(psc["runAsNonRoot"] and sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"])
        self.assertNotEqual(psc["runAsUser"], 0)
        self.assertFalse(sc["allowPrivilegeEscalation"])
        self.assertEqual(sc["capabilities"]["drop"], ["ALL"])
        self.assertEqual(psc["seccompProfile"]["type"], "RuntimeDefault")
        self.assertIn("tcpSocket", container["livenessProbe"])
        self.assertIn("ping", " ".join(container["readinessProbe"]["exec"]["command"]))
        conf = one(docs, "ConfigMap", f"{RELEASE}-ledger")["data"]["valkey.conf"].splitlines()
        for line in ("appendonly yes", "dir /data", "maxmemory-policy noeviction", "include /run/valkey/auth.conf", "bind * -::*"):
            self.assertIn(line, conf)
        self.assertFalse([l for l in conf if l.startswith("requirepass")])
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        self.assertEqual(mounts, {"data": "/data", "config": "/etc/valkey", "run": "/run/valkey"})
        volumes = {v["name"]: v for v in pod["volumes"]}
        self.assertEqual(volumes["run"]["emptyDir"]["medium"], "Memory")
        self.assertNotIn("data", volumes, "data comes from the volumeClaimTemplate")
        (claim,) = sts["spec"]["volumeClaimTemplates"]
        self.assertEqual(claim["metadata"]["name"], "data")
        self.assertEqual(claim["spec"]["resources"]["requests"]["storage"], "1Gi")
        self.assertNotIn("storageClassName", claim["spec"])

    def test_ledger_options(self):
        values = {"ledger": {"valkey": {"auth": {"existingSecret": "ledger-pw", "passwordKey": "pw"},
                                        "persistence": {"size": "5Gi", "storageClass": "fast-ssd"},
                                        "maxMemory": "1gb", "imagePullSecrets": [{"name": "mirror"}],
                                        "nodeSelector": {"kubernetes.io/os": "linux"}}}}
        docs = render(values)
        self.validate("ledger options", docs)
        self.assertEqual(find(docs, "Secret", f"{RELEASE}-ledger"), [], "your Secret replaces the generated one")
        sts = one(docs, "StatefulSet", f"{RELEASE}-ledger")
        self.assertEqual(env_of(sts)["VALKEYCLI_AUTH"]["valueFrom"], {"secretKeyRef": {"name": "ledger-pw", "key": "pw"}})
        (claim,) = sts["spec"]["volumeClaimTemplates"]
        self.assertEqual(claim["spec"]["storageClassName"], "fast-ssd")
        self.assertEqual(claim["spec"]["resources"]["requests"]["storage"], "5Gi")
        self.assertIn("maxmemory 1gb", one(docs, "ConfigMap", f"{RELEASE}-ledger")["data"]["valkey.conf"])
        env = pod_spec(one(docs, "Deployment", f"{RELEASE}-gateway"))["containers"][0]["env"]
        # Kubernetes expands $(TOLLGATE_LEDGER_PASSWORD): it must come first.
        self.assertEqual(env[0], {"name": "TOLLGATE_LEDGER_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "ledger-pw", "key": "pw"}}})
        self.assertEqual(env[1], {"name": "TOLLGATE_LEDGER", "value": f"redis://:$(TOLLGATE_LEDGER_PASSWORD)@{RELEASE}-ledger.{NAMESPACE}.svc:6379/0"})
        self.assertNotEqual(checksum_of(docs), checksum_of(rendered("default")), "a config change restarts Valkey")

    def test_embedded_ledger(self):
        docs = render({"ledger": {"mode": "embedded"}, "gateway": {"replicas": 1}})
        self.validate("embedded ledger", docs)
        for kind in ("StatefulSet", "Secret", "PodDisruptionBudget"):
            self.assertEqual(find(docs, kind, f"{RELEASE}-ledger") + find(docs, kind, f"{RELEASE}-gateway"), [], kind)
        self.assertEqual(env_of(one(docs, "Deployment", f"{RELEASE}-gateway"))["TOLLGATE_LEDGER"]["value"],
                         "file:/var/lib/tollgate/ledger.journal")
        self.assertEqual(flag_values(operator_args(docs), "--sidecar-mode"), ["gateway"])

    def test_agent_egress_in_gateway_mode(self):
        """Gateway mode: DNS and the gateway are the only ways out, and enough (no provider key
        is in the pod)."""
        docs = render({"networkPolicy": {"agentNamespaces": ["dev-tools"]}})
        self.validate("agent egress", docs)
        policy = one(docs, "NetworkPolicy", f"{RELEASE}-agent-egress")
        self.assertEqual(policy["metadata"]["namespace"], "dev-tools")
        dns, gateway = policy["spec"]["egress"]
        self.assertEqual(dns["to"][0]["podSelector"]["matchLabels"], {"k8s-app": "kube-dns"})
        self.assertEqual(gateway["ports"], [{"protocol": "TCP", "port": 8080}])
        gateway_labels = one(docs, "Deployment", f"{RELEASE}-gateway")["spec"]["template"]["metadata"]["labels"]
        self.assertTrue(selects(gateway["to"][0]["podSelector"], gateway_labels))
        ledger_labels = one(docs, "StatefulSet", f"{RELEASE}-ledger")["spec"]["template"]["metadata"]["labels"]
        self.assertFalse(selects(gateway["to"][0]["podSelector"], ledger_labels))

    def test_gateway_spreads_over_nodes(self):
        pod = pod_spec(one(rendered("default"), "Deployment", f"{RELEASE}-gateway"))
        (term,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        self.assertEqual(term["podAffinityTerm"]["topologyKey"], "kubernetes.io/hostname")
        mine = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["gw"]}]}]}}}
        pod = pod_spec(one(render({"gateway": {"affinity": mine}}), "Deployment", f"{RELEASE}-gateway"))
        self.assertEqual(pod["affinity"], mine)


def checksum_of(docs: list[dict]) -> str:
    return one(docs, "StatefulSet", f"{RELEASE}-ledger")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]


def chart_with_ledger_secret(tmp: str, data: dict[str, str]) -> helm_python.Chart:
    """The chart with `lookup` of the ledger Secret answered with `data` (base64 values), as
    `helm upgrade` against a cluster that has the Secret would (the SDK renders offline, where
    lookup finds nothing)."""
    copy_dir = Path(tmp) / "tollgate"
    shutil.copytree(CHART, copy_dir)
    helpers = copy_dir / "templates" / "_helpers.tpl"
    text = helpers.read_text()
    call = 'lookup "v1" "Secret" .Release.Namespace $name'
    assert text.count(call) == 1, f"{call} not in _helpers.tpl"
    stub = '(dict "data" (dict ' + " ".join(f'"{k}" "{v}"' for k, v in data.items()) + "))"
    helpers.write_text(text.replace(call, stub))
    return helm_python.Chart.load(copy_dir)


class LedgerPassword(unittest.TestCase):
    def test_stable_across_upgrades(self):
        installed = one(render(), "Secret", f"{RELEASE}-ledger")
        password = base64.b64decode(installed["data"]["password"]).decode()
        with tempfile.TemporaryDirectory() as tmp:
            upgrade = chart_with_ledger_secret(tmp, installed["data"])
            for _ in range(2):
                docs = render({"operator": {"logFormat": "text"}}, the_chart=upgrade)
                self.assertEqual(ledger_password(docs), password)
                url = base64.b64decode(one(docs, "Secret", f"{RELEASE}-ledger")["data"]["url"]).decode()
                self.assertEqual(url, f"redis://:{password}@{RELEASE}-ledger.{NAMESPACE}.svc:6379/0")

    def test_a_secret_without_a_password_gets_one(self):
        with tempfile.TemporaryDirectory() as tmp:
            docs = render(the_chart=chart_with_ledger_secret(tmp, {"other": "eA=="}))
        self.assertRegex(ledger_password(docs), r"^[A-Za-z0-9]{32}$")

    def test_a_first_install_generates_a_new_one(self):
        # Offline (and on a first install) the lookup finds nothing: a fresh random password.
        self.assertNotEqual(ledger_password(render()), ledger_password(render()))


class Schema(unittest.TestCase):
    def test_rejects_bad_values(self):
        for bad, expect in (({"webhook": {"failurePolicy": "Maybe"}}, "failurePolicy"),
                            ({"operator": {"logFormat": "xml"}}, "logFormat"),
                            ({"webhook": {"failurPolicy": "Fail"}}, "failurPolicy"),
                            ({"operator": {"replicas": "two"}}, "replicas"),
                            ({"ledger": {"redis": {"url": "redis://user:pw@r:6379"}}}, "url"),
                            ({"sidecar": {"mode": "proxy"}}, "mode"),
                            ({"ledger": {"mode": "redis"}}, "mode"),
                            ({"ledger": {"valkey": {"image": {"tag": ""}}}}, "tag"),
                            ({"ledger": {"valkey": {"persistence": {"size": "lots"}}}}, "size"),
                            ({"gateway": {"podDisruptionBudget": {"minAvailable": 0}}}, "minAvailable")):
            with self.subTest(values=bad):
                with self.assertRaisesRegex(HelmError, expect):
                    chart().validate_schema(bad)
                with self.assertRaises(HelmError):
                    chart().render(bad, name=RELEASE, namespace=NAMESPACE)

    def test_accepts_default_and_full_values(self):
        chart().validate_schema(None)
        chart().validate_schema(full_values())

    def test_every_field_is_documented(self):
        """Each field the schema defines has a comment line right above it in values.yaml."""
        schema = json.loads((CHART / "values.schema.json").read_text())
        lines = (CHART / "values.yaml").read_text().splitlines()
        stack: list[tuple[int, dict | None]] = [(-1, schema)]  # (indent, schema of that mapping)
        undocumented, checked = [], 0
        for i, line in enumerate(lines):
            stripped = line.strip()
            if not stripped or stripped.startswith("#") or stripped.startswith("-") or ":" not in stripped:
                continue
            indent = len(line) - len(line.lstrip())
            key = stripped.split(":", 1)[0]
            while stack[-1][0] >= indent:
                stack.pop()
            parent = stack[-1][1]
            props = (parent or {}).get("properties")
            field = props.get(key) if props else None
            if props is not None:
                self.assertIsNotNone(field, f"values.yaml:{i + 1}: {key} is not in values.schema.json")
                previous = next(l for l in reversed(lines[:i]) if l.strip())
                checked += 1
                if not previous.strip().startswith("#"):
                    undocumented.append(f"values.yaml:{i + 1}: {key}")
            stack.append((indent, field))
        self.assertEqual(undocumented, [], "fields without a comment above them")
        self.assertGreater(checked, 60)

    def test_schema_is_draft_07(self):
        schema = json.loads((CHART / "values.schema.json").read_text())
        self.assertEqual(schema["$schema"], "http://json-schema.org/draft-07/schema#")
        jsonschema.Draft7Validator.check_schema(schema)
        jsonschema.Draft7Validator(schema).validate(yaml.safe_load((CHART / "values.yaml").read_text()))


class Rbac(unittest.TestCase):
    WRITE = {"update", "patch", "delete", "deletecollection", "*"}

    def test_secret_writes_are_by_name(self):
        for label in ("default", "full"):
            for role, rule in rules_of(rendered(label)):
                touches_secrets = "" in rule.get("apiGroups", []) and ({"secrets", "*"} & set(rule.get("resources", [])))
                writes = self.WRITE & set(rule.get("verbs", []))
                with self.subTest(values=label, role=f"{role['kind']} {role['metadata']['name']}", rule=rule):
                    if touches_secrets and writes:
                        self.assertTrue(rule.get("resourceNames"), "secrets update/patch/delete without resourceNames")
                    self.assertNotIn("*", rule.get("verbs", []))

    def test_operator_cluster_role(self):
        docs = rendered("default")
        rules = one(docs, "ClusterRole", f"{RELEASE}-operator")["rules"]
        named_cm = [r for r in rules if r["resources"] == ["configmaps"] and "resourceNames" in r]
        self.assertEqual(len(named_cm), 1)
        self.assertEqual(named_cm[0]["resourceNames"], POLICY_CONFIGMAPS)
        self.assertEqual(sorted(named_cm[0]["verbs"]), ["delete", "get", "patch"])
        unnamed_cm = [r for r in rules if r["resources"] == ["configmaps"] and "resourceNames" not in r]
        self.assertEqual([sorted(r["verbs"]) for r in unnamed_cm], [["create", "list", "watch"]])
        self.assertIn({"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]}, rules)
        self.assertIn({"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["tollgate-credentials"], "verbs": ["patch", "delete"]}, rules)
        self.assertIn({"apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations"],
                       "resourceNames": [f"{RELEASE}-sidecar-injector"], "verbs": ["get", "patch"]}, rules)
        # ownerReferences with blockOwnerDeletion on the generated key Secrets: where the
        # OwnerReferencesPermissionEnforcement admission plugin is on (OpenShift), setting one
        # needs update on the owner's finalizers.
        self.assertIn({"apiGroups": ["tollgate.dev"], "resources": ["virtualkeys/finalizers"], "verbs": ["update"]}, rules)
        role = one(docs, "Role", f"{RELEASE}-operator")
        self.assertEqual(role["metadata"]["namespace"], NAMESPACE)
        # The operator replaces (update) the certificate Secret; it never patches it.
        self.assertIn({"apiGroups": [""], "resources": ["secrets"], "resourceNames": [f"{RELEASE}-webhook-tls"], "verbs": ["get", "update"]}, role["rules"])
        for kind in ("ClusterRoleBinding", "RoleBinding"):
            binding = one(docs, kind, f"{RELEASE}-operator")
            self.assertEqual(binding["subjects"], [{"kind": "ServiceAccount", "name": f"{RELEASE}-operator", "namespace": NAMESPACE}])
        self.assertEqual(operator_deployment(docs)["spec"]["template"]["spec"]["serviceAccountName"], f"{RELEASE}-operator")

    def test_cert_manager_mode_drops_certificate_rights(self):
        docs = rendered("full")
        for role, rule in rules_of(docs):
            if role["metadata"]["name"] != f"{RELEASE}-operator":
                continue
            self.assertNotIn("mutatingwebhookconfigurations", rule["resources"])
            self.assertNotIn(f"{RELEASE}-webhook-tls", rule.get("resourceNames", []))

    def test_aggregated_roles(self):
        """What the built-in admin, edit and view roles get. VirtualKeys spend their owner's
        budgets: namespace admins and editors only read them by default (test_tenancy.py has
        the switches)."""
        docs = rendered("default")
        admin = {"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"}
        edit = {"create", "update", "patch", "delete", "get", "list", "watch"}
        read = {"get", "list", "watch"}
        expected = {"admin": {r: (read if r == "virtualkeys" else admin) for r in TOLLGATE_RESOURCES},
                    "edit": {r: (read if r == "virtualkeys" else edit) for r in TOLLGATE_RESOURCES},
                    "view": {**{r: read for r in TOLLGATE_RESOURCES}, **{f"{r}/status": read for r in TOLLGATE_RESOURCES}}}
        for level, want in expected.items():
            role = one(docs, "ClusterRole", f"{RELEASE}-{level}")
            self.assertEqual(role["metadata"]["labels"][f"rbac.authorization.k8s.io/aggregate-to-{level}"], "true")
            for rule in role["rules"]:
                self.assertEqual(rule["apiGroups"], ["tollgate.dev"])
            got = {}
            for _, resource, verb, _ in grants(role["rules"]):
                got.setdefault(resource, set()).add(verb)
            self.assertEqual(got, want, level)
        docs = render({"rbac": {"aggregateClusterRoles": False}})
        self.assertEqual(find(docs, "ClusterRole", f"{RELEASE}-view"), [])


def grants(rules: list[dict]) -> set[tuple[str, str, str, str | None]]:
    """Each (apiGroup, resource, verb, resourceName or None) that a list of rules grants."""
    return {(group, resource, verb, name)
            for rule in rules
            for group in rule.get("apiGroups", [])
            for resource in rule.get("resources", [])
            for verb in rule.get("verbs", [])
            for name in (rule.get("resourceNames") or [None])}


def policy_configmaps(shards: int) -> list[str]:
    return ["tollgate-policy"] + [f"tollgate-policy-keys-{i:02d}" for i in range(shards)]


class RbacByHand(unittest.TestCase):
    def test_deploy_rbac_grants_what_the_chart_grants(self):
        """operator/deploy/rbac.yaml (the operator run by hand) and the chart's default render."""
        docs = rendered("default")
        by_hand = [d for d in yaml.safe_load_all(DEPLOY_RBAC.read_text()) if d]
        for kind in ("ClusterRole", "Role"):
            with self.subTest(kind=kind):
                (role,) = [d for d in by_hand if d["kind"] == kind]
                self.assertEqual(grants(role["rules"]), grants(one(docs, kind, f"{RELEASE}-operator")["rules"]))
        (cluster_role,) = [d for d in by_hand if d["kind"] == "ClusterRole"]
        self.assertTrue(("tollgate.dev", "virtualkeys/finalizers", "update", None) in grants(cluster_role["rules"]),
                        "operator/deploy/rbac.yaml: no update on virtualkeys/finalizers")


class KeyShards(unittest.TestCase):
    """The operator writes at most --max-key-shards key shards; RBAC names each one, and the
    gateway mounts each one: all three follow operator.maxKeyShards."""

    def test_names_follow_max_key_shards(self):
        for shards in (1, 16, 20, 40):
            with self.subTest(shards=shards):
                docs = render({"operator": {"maxKeyShards": shards}, "gateway": {"enabled": True}})
                self.assertEqual(flag_values(operator_args(docs), "--max-key-shards"), [str(shards)])
                rules = one(docs, "ClusterRole", f"{RELEASE}-operator")["rules"]
                (named,) = [r for r in rules if r["resources"] == ["configmaps"] and "resourceNames" in r]
                self.assertEqual(named["resourceNames"], policy_configmaps(shards))
                pod = one(docs, "Deployment", f"{RELEASE}-gateway")["spec"]["template"]["spec"]
                sources = next(v for v in pod["volumes"] if v["name"] == "policy")["projected"]["sources"]
                self.assertEqual([s["configMap"]["name"] for s in sources], policy_configmaps(shards))

    def test_the_flag_is_set_only_through_the_value(self):
        for args in (["--max-key-shards", "20"], ["--max-key-shards=20"]):
            with self.subTest(args=args):
                with self.assertRaisesRegex(HelmError, "operator.maxKeyShards"):
                    render({"operator": {"extraArgs": args}})

    def test_schema_bounds(self):
        for bad in (0, 101, "16"):
            with self.subTest(maxKeyShards=bad):
                with self.assertRaisesRegex(HelmError, "maxKeyShards"):
                    chart().validate_schema({"operator": {"maxKeyShards": bad}})


class SidecarMode(unittest.TestCase):
    """Native sidecars need Kubernetes 1.29 (1.28 only with the SidecarContainers feature gate,
    off by default). Below, the API server drops restartPolicy: Always from the injected init
    container, whose probes then fail pod validation: every pod of a governed namespace would
    be refused. So by default the chart picks the mode from the cluster's version."""

    def test_the_chart_supports_versions_below_native_sidecars(self):
        meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
        self.assertEqual(meta["kubeVersion"], f">={OLDEST_K8S_VERSION}-0")
        self.assertEqual(yaml.safe_load((CHART / "values.yaml").read_text())["injection"]["nativeSidecar"], "auto")

    def test_auto_follows_the_cluster_version(self):
        for version, native in (("1.25.0", False), ("1.28.9", False), ("1.28.3-gke.1286000", False),
                                ("1.29.0", True), ("1.29.1-eks-508b6b3", True), ("1.33.0", True)):
            with self.subTest(kube_version=version):
                self.assertIs(injection_config(render(OLD_CLUSTER, kube_version=version))["nativeSidecar"], native)

    def test_an_explicit_choice_wins(self):
        # 1.28 with the feature gate turned on; a newer cluster that wants plain containers.
        on = injection_config(render({"injection": {"nativeSidecar": True}, **OLD_CLUSTER}, kube_version="1.28.5"))
        self.assertIs(on["nativeSidecar"], True)
        off = injection_config(render({"injection": {"nativeSidecar": False}}))
        self.assertIs(off["nativeSidecar"], False)
        with self.assertRaisesRegex(HelmError, "nativeSidecar"):
            chart().validate_schema({"injection": {"nativeSidecar": "sometimes"}})


class Listeners(unittest.TestCase):
    FLAGS = ("--listen", "--admin-listen", "--webhook-listen")

    def test_every_pod_listener_covers_ipv4_and_ipv6(self):
        """Probes, the API server's webhook calls and Service traffic reach the pod IP, IPv4 or
        IPv6: every listener the chart configures is `[::]` (dual-stack in both binaries,
        dataplane/src/server/listen.rs). The sidecar's admin listener: operator/src/inject."""
        for label in ("default", "full"):
            seen = []
            for doc in find(rendered(label), "Deployment"):
                for container in doc["spec"]["template"]["spec"]["containers"]:
                    for flag in self.FLAGS:
                        for addr in flag_values(container.get("args", []), flag):
                            host, _, port = addr.rpartition(":")
                            where = f"{label}: {doc['metadata']['name']}/{container['name']} {flag} {addr}"
                            self.assertEqual(host, "[::]", where)
                            self.assertTrue(port.isdigit(), where)
                            seen.append(where)
            self.assertGreaterEqual(len(seen), 2 if label == "default" else 4, seen)


# Namespaces a stand-in cluster has, for the lookup-dependent templates.
CLUSTER_NAMESPACES = ["kube-system", NAMESPACE, "ci-agents"]


def chart_on_a_cluster(tmp: str) -> helm_python.Chart:
    """The chart with `lookup` of Namespaces answered from CLUSTER_NAMESPACES, as `helm install`
    against a cluster would (the SDK renders offline, where lookup finds nothing)."""
    copy_dir = Path(tmp) / "tollgate"
    shutil.copytree(CHART, copy_dir)
    helpers = copy_dir / "templates" / "_helpers.tpl"
    text = helpers.read_text()
    call = 'lookup "v1" "Namespace" ""'
    assert call in text, f"{call} not in _helpers.tpl"
    stub = "get (dict " + " ".join(f'"{n}" (dict "kind" "Namespace")' for n in CLUSTER_NAMESPACES) + ")"
    helpers.write_text(text.replace(call, stub))
    return helm_python.Chart.load(copy_dir)


class NetworkPolicyNamespaces(unittest.TestCase):
    """A NetworkPolicy lives in the namespace it restricts, and the API server refuses an object
    in a namespace that does not exist: one missing agent namespace used to fail the install."""

    VALUES = {"gateway": {"enabled": True},
              "networkPolicy": {"enabled": True, "agentNamespaces": ["ci-agents", "not-created-yet"]}}

    def namespaces(self, docs):
        return sorted(p["metadata"]["namespace"] for p in find(docs, "NetworkPolicy", f"{RELEASE}-agent-egress"))

    def test_an_install_skips_missing_namespaces_and_says_so(self):
        with tempfile.TemporaryDirectory() as tmp:
            on_cluster = chart_on_a_cluster(tmp)
            self.assertEqual(self.namespaces(render(self.VALUES, the_chart=on_cluster)), ["ci-agents"])
            text = notes(self.VALUES, the_chart=on_cluster)
        self.assertIn("not-created-yet", text)
        self.assertIn("helm upgrade", text)
        self.assertNotIn("ci-agents", text)

    def test_an_offline_render_keeps_every_namespace(self):
        # helm template, --dry-run=client, Argo CD: no cluster to ask, so nothing is dropped.
        self.assertEqual(self.namespaces(render(self.VALUES)), ["ci-agents", "not-created-yet"])
        self.assertNotIn("not-created-yet", notes(self.VALUES))


def matches_selector(selector: dict | None, labels: dict) -> bool:
    """Whether a LabelSelector (matchLabels and matchExpressions) selects `labels`; {} selects all."""
    selector = selector or {}
    assert set(selector) <= {"matchLabels", "matchExpressions"}, selector
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        key, op, values = e["key"], e["operator"], e.get("values", [])
        if ((op == "In" and labels.get(key) not in values)
                or (op == "NotIn" and key in labels and labels[key] in values)
                or (op == "Exists" and key not in labels)
                or (op == "DoesNotExist" and key in labels)):
            return False
    return True


def ingress_admits(policy: dict, port: int, namespace: str, pod_labels: dict, namespace_labels: dict | None = None) -> bool:
    """Whether an ingress NetworkPolicy admits TCP to `port` from a pod labelled `pod_labels` in
    `namespace` (whose labels are `namespace_labels` and kubernetes.io/metadata.name). ipBlock
    peers are taken to match no pod."""
    ns_labels = {"kubernetes.io/metadata.name": namespace, **(namespace_labels or {})}
    for rule in policy["spec"].get("ingress") or []:
        ports = rule.get("ports")
        if ports and not any(p.get("protocol", "TCP") == "TCP" and p.get("port") in (None, port) for p in ports):
            continue
        peers = rule.get("from")
        if not peers:
            return True
        for peer in peers:
            if "ipBlock" in peer:
                continue
            if "namespaceSelector" in peer:
                in_namespace = matches_selector(peer["namespaceSelector"], ns_labels)
            else:
                in_namespace = namespace == policy["metadata"]["namespace"]
            if in_namespace and matches_selector(peer.get("podSelector"), pod_labels):
                return True
    return False


class GatewayIngress(unittest.TestCase):
    """The gateway's admin port serves /admin/spend (every budget, with owners' e-mails and key
    ids) and /metrics (per-key series): only the operator and the monitoring named in
    networkPolicy.metricsFrom may reach it. The proxy port is for clients (it demands a
    virtual key anyway)."""

    PROMETHEUS = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                  "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}

    def pods(self, docs):
        return {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"] for d in workloads(docs)}

    def ports(self, docs):
        container = pod_spec(one(docs, "Deployment", f"{RELEASE}-gateway"))["containers"][0]
        return {p["name"]: p["containerPort"] for p in container["ports"]}

    def test_default_admin_port_only_from_the_operator(self):
        docs = rendered("default")
        policy = one(docs, "NetworkPolicy", f"{RELEASE}-gateway")
        self.assertEqual(policy["metadata"]["namespace"], NAMESPACE)
        self.assertEqual(policy["spec"]["policyTypes"], ["Ingress"], "egress stays open: providers, MCP servers, sinks, ledger")
        pods = self.pods(docs)
        self.assertTrue(matches_selector(policy["spec"]["podSelector"], pods[f"{RELEASE}-gateway"]))
        for other in (f"{RELEASE}-operator", f"{RELEASE}-ledger"):
            self.assertFalse(matches_selector(policy["spec"]["podSelector"], pods[other]), other)
        for rule in policy["spec"]["ingress"]:
            self.assertTrue(rule.get("ports"), f"a rule without ports opens every port: {rule}")
        ports = self.ports(docs)
        self.assertEqual(ports, {"http": 8080, "admin": 9090})
        proxy, admin = ports["http"], ports["admin"]
        self.assertTrue(ingress_admits(policy, admin, NAMESPACE, pods[f"{RELEASE}-operator"]))
        outsiders = (
            ("another pod of the release namespace", NAMESPACE, {}, {}),
            ("a governed agent namespace", "dev-tools", {"app": "claude"}, {"tollgate.dev/inject": "enabled"}),
            ("a tenant pod wearing the operator's labels", "dev-tools", pods[f"{RELEASE}-operator"], {}),
            ("Prometheus, not named in metricsFrom", "monitoring", {"app.kubernetes.io/name": "prometheus"}, {}),
        )
        for what, ns, labels, ns_labels in outsiders:
            with self.subTest(client=what):
                self.assertFalse(ingress_admits(policy, admin, ns, labels, ns_labels), "admin port")
                self.assertTrue(ingress_admits(policy, proxy, ns, labels, ns_labels), "proxy port (gatewayClients: all)")
        # Ports the gateway does not serve stay closed.
        self.assertFalse(ingress_admits(policy, 6379, NAMESPACE, pods[f"{RELEASE}-operator"]))
        self.assertFalse(ingress_admits(policy, 6379, "dev-tools", {}))

    def test_metrics_from(self):
        docs = render({"networkPolicy": {"metricsFrom": [self.PROMETHEUS]}})
        Validate.validate_all(self, "gateway metricsFrom", docs)
        policy = one(docs, "NetworkPolicy", f"{RELEASE}-gateway")
        pods = self.pods(docs)
        self.assertTrue(ingress_admits(policy, 9090, "monitoring", {"app.kubernetes.io/name": "prometheus"}))
        self.assertTrue(ingress_admits(policy, 9090, NAMESPACE, pods[f"{RELEASE}-operator"]))
        self.assertFalse(ingress_admits(policy, 9090, "monitoring", {"app.kubernetes.io/name": "grafana"}))
        self.assertFalse(ingress_admits(policy, 9090, "dev-tools", {"app.kubernetes.io/name": "prometheus"}))
        # The full values name a monitoring namespace too.
        policy = one(rendered("full"), "NetworkPolicy", f"{RELEASE}-gateway")
        for peer in full_values()["networkPolicy"]["metricsFrom"]:
            self.assertTrue(any(peer in (rule.get("from") or []) and {"protocol": "TCP", "port": 9090} in rule["ports"]
                                for rule in policy["spec"]["ingress"]), peer)

    def test_clients_from_agent_namespaces_only(self):
        values = {"networkPolicy": {"gatewayClients": "agentNamespaces", "agentNamespaces": ["ci-agents"],
                                    "metricsFrom": [self.PROMETHEUS]}}
        docs = render(values)
        Validate.validate_all(self, "gateway clients from agent namespaces", docs)
        policy = one(docs, "NetworkPolicy", f"{RELEASE}-gateway")
        pods = self.pods(docs)
        for what, ns, ns_labels, admitted in (
                ("a listed agent namespace", "ci-agents", {}, True),
                ("the release namespace", NAMESPACE, {}, True),
                # Sidecars of governed namespaces forward to the gateway (sidecar.mode gateway).
                ("a governed namespace", "dev-tools", {"tollgate.dev/inject": "enabled"}, True),
                ("an opt-in governed namespace", "ml", {"tollgate.dev/inject": "opt-in"}, True),
                ("any other namespace", "web-shop", {}, False)):
            with self.subTest(client=what):
                self.assertIs(ingress_admits(policy, 8080, ns, {"app": "claude"}, ns_labels), admitted)
                self.assertFalse(ingress_admits(policy, 9090, ns, {"app": "claude"}, ns_labels))
        self.assertTrue(ingress_admits(policy, 9090, NAMESPACE, pods[f"{RELEASE}-operator"]))
        self.assertTrue(ingress_admits(policy, 9090, "monitoring", {"app.kubernetes.io/name": "prometheus"}))
        # The agent namespaces keep their egress policy.
        self.assertEqual(one(docs, "NetworkPolicy", f"{RELEASE}-agent-egress")["metadata"]["namespace"], "ci-agents")

    def test_switches(self):
        for values in ({"networkPolicy": {"enabled": False}},
                       {"gateway": {"enabled": False}, "webhook": {"enabled": False}}):
            with self.subTest(values=values):
                self.assertEqual(find(render(values), "NetworkPolicy", f"{RELEASE}-gateway"), [])
        for bad, expect in (({"networkPolicy": {"gatewayClients": "everyone"}}, "gatewayClients"),
                            ({"networkPolicy": {"metricsFrom": {"podSelector": {}}}}, "metricsFrom")):
            with self.subTest(values=bad):
                with self.assertRaisesRegex(HelmError, expect):
                    chart().validate_schema(bad)


def readme_section(title: str) -> str:
    """The paragraph of README.md that starts with **title** (or **title.**)."""
    text = (ROOT / "README.md").read_text()
    start = text.index(f"**{title}")
    end = text.find("\n\n", start)
    return text[start:end]


class AgentEgressClaims(unittest.TestCase):
    """The agent-namespace egress NetworkPolicy lives in the tenant's namespace, where the built-in
    edit role may create NetworkPolicies, and NetworkPolicies are additive: a tenant can allow
    all egress beside it. The docs must not sell it as enforcement against tenants."""

    def texts(self):
        values = (CHART / "values.yaml").read_text()
        values_comment = values[values.index("# Egress lockdown"):values.index("\nnetworkPolicy:\n")]
        manifest = render_manifests({"networkPolicy": {"agentNamespaces": ["dev-tools"]}})
        policy_text = next(text for path, text in manifest.items() if path.endswith("networkpolicy.yaml"))
        return {"README.md (Egress lockdown)": readme_section("Egress lockdown"),
                "values.yaml (networkPolicy)": values_comment,
                "templates/networkpolicy.yaml": policy_text}

    def test_not_called_enforcement(self):
        for where, text in self.texts().items():
            with self.subTest(where=where):
                flat = " ".join(text.replace("#", " ").split())
                self.assertNotRegex(flat, r"(?i)\b(that|this|it) is enforcement\b")

    def test_says_what_holds_and_what_enforces(self):
        for where in ("README.md (Egress lockdown)", "values.yaml (networkPolicy)"):
            flat = " ".join(self.texts()[where].replace("#", " ").split())
            with self.subTest(where=where):
                # Who can undo it, what still holds, and what a tenant cannot undo.
                self.assertRegex(flat, r"\bedit\b")
                self.assertIn("additive", flat)
                self.assertIn("provider key", flat)
                self.assertIn("AdminNetworkPolicy", flat)
                self.assertIn("networkpolicies", flat)


class ReadmeKindQuickStart(unittest.TestCase):
    def test_documented_values_exist(self):
        """Every `--set KEY=` in README.md names a value of the chart's schema."""
        schema = json.loads((CHART / "values.schema.json").read_text())
        keys = re.findall(r"--set ([A-Za-z0-9_.]+)=", (ROOT / "README.md").read_text())
        self.assertGreaterEqual(len(keys), 4, keys)
        for key in keys:
            node = schema
            for part in key.split("."):
                self.assertIn(part, node.get("properties", {}), f"README.md: --set {key}")
                node = node["properties"][part]

    def test_documented_value_paths_exist(self):
        """Every value path README.md names in backticks (`networkPolicy.metricsFrom`, ...) is one
        of the chart's schema; the security-relevant values of the Kubernetes sections are named."""
        schema = json.loads((CHART / "values.schema.json").read_text())
        text = (ROOT / "README.md").read_text()
        top = set(schema["properties"])
        paths = [p for p in re.findall(r"`([A-Za-z][A-Za-z0-9]*(?:\.[A-Za-z][A-Za-z0-9]*)+)(?:: [^`]*)?`", text)
                 if p.split(".")[0] in top and p.rsplit(".", 1)[1] not in {"rs", "yaml", "json", "md", "lua", "py"}]
        for required in ("gateway.service.sessionAffinityTimeoutSeconds", "networkPolicy.metricsFrom",
                         "networkPolicy.gatewayClients", "networkPolicy.agentNamespaces"):
            self.assertIn(required, paths, f"README.md does not document {required}")
        for path in paths:
            node = schema
            for part in path.split("."):
                self.assertIn(part, node.get("properties", {}), f"README.md: `{path}`")
                node = node["properties"][part]


def tearDownModule():
    print("\nchart test summary (Kubernetes schemas v%s, release %s in %s):" % (K8S_VERSION, RELEASE, NAMESPACE), file=sys.stderr)
    for label, counts in SUMMARY.items():
        parts = ", ".join(f"{v} {k}" for k, v in counts.items() if k != "documents")
        print(f"  {label} values: {counts['documents']} documents rendered; {parts}", file=sys.stderr)


if __name__ == "__main__":
    unittest.main()


class TollgateResources(unittest.TestCase):
    """The resources users keep in Git beside the chart (examples/k8s) against the CRD schemas
    the chart installs: the same check the chart's own tollgate.dev documents would get."""

    def docs(self):
        for path in sorted((ROOT / "examples" / "k8s").glob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                if doc and str(doc.get("apiVersion", "")).startswith("tollgate.dev/"):
                    yield path.name, doc

    def test_examples_validate_against_the_installed_crds(self):
        schemas = crd_schemas()
        seen = set()
        for name, doc in self.docs():
            with self.subTest(f"{name}: {doc['kind']} {doc['metadata']['name']}"):
                jsonschema.validate(doc, schemas[(doc["apiVersion"], doc["kind"])])
                seen.add(doc["kind"])
        self.assertGreaterEqual(len(seen), 5, seen)

    def test_a_wrong_type_is_rejected(self):
        bad = {"apiVersion": "tollgate.dev/v1alpha1", "kind": "VirtualKey",
               "metadata": {"name": "alice", "namespace": "dev-tools"}, "spec": {"enabled": "yes"}}
        with self.assertRaises(jsonschema.ValidationError):
            jsonschema.validate(bad, crd_schemas()[("tollgate.dev/v1alpha1", "VirtualKey")])
