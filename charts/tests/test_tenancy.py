"""Tenant-safe resources: whose money a VirtualKey spends.

A VirtualKey spends its spec.owner's user budgets and is recorded in that name, and the
operator copies team, owner, mcp, capture and rateLimits from the spec as written. So the chart
(1) keeps VirtualKey writes out of the built-in admin and edit roles by default, (2) ships the
unbound ClusterRoles <fullname>-key-admin and -key-editor, and (3) on Kubernetes 1.30+ a
ValidatingAdmissionPolicy by which, unless the requester is a key admin (the custom verb
assign-owner on virtualkeys, checked with the CEL authorizer), only the owner creates or changes
a key, never a ServiceAccount, without MCP grants or capture, and without undoing a revocation
(re-enabling, removing or postponing the expiry). (4) A render that would drop the policy
while it grants VirtualKey writes fails unless keyOwnerPolicy.allowWithout acknowledges it.

Without an API server, the policy's CEL is parsed and evaluated with cel-python (celpy) over the
cases that matter, with a stand-in for the Kubernetes `authorizer` library that answers from the
rules of the ClusterRoles the chart renders (so the verb the expression checks and the verb the
role grants cannot drift apart). What celpy cannot vouch for is Kubernetes' own type check and
cost estimate of the expressions: the rendered objects are validated strictly against the
Kubernetes 1.30 and 1.33 schemas, and the one authorizer call is kept last and lazy.
"""

from __future__ import annotations

import unittest

import celpy
import yaml
from celpy import celtypes
from helm_python.errors import HelmError

import test_chart as tc
from test_chart import DEPLOY_RBAC, NAMESPACE, RELEASE, TOLLGATE_RESOURCES, chart, find, grants, notes, one, render

POLICY = f"{RELEASE}-virtualkey-owner"
VAP_API = "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy"
WRITE = {"create", "update", "patch"}


def policy_docs(docs: list[dict]) -> tuple[dict, dict]:
    return one(docs, "ValidatingAdmissionPolicy", POLICY), one(docs, "ValidatingAdmissionPolicyBinding", POLICY)


# --- A stand-in for Kubernetes' CEL authorizer library, answered by RBAC rules ----------------

def rule_allows(rule: dict, group: str, resource: str, verb: str) -> bool:
    """Whether one RBAC PolicyRule (no resourceNames: the policy's check names no object) allows
    `verb` on `group`/`resource`, with RBAC's `*` wildcards."""
    if rule.get("resourceNames"):
        return False
    return (any(g in ("*", group) for g in rule.get("apiGroups", []))
            and any(r in ("*", resource) for r in rule.get("resources", []))
            and any(v in ("*", verb) for v in rule.get("verbs", [])))


CLUSTER_ADMIN = [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]


class Authorizer:
    """authorizer.group(g).resource(r).namespace(ns).check(verb).allowed(), for a requester
    bound (in `namespaces`, or cluster-wide when None) to roles with `rules`. Records each check."""

    def __init__(self, rules: list[dict], namespaces: set[str] | None = None, broken: bool = False):
        self.rules, self.namespaces, self.checks, self.broken = rules, namespaces, [], broken

    def functions(self) -> dict:
        def builder(field):
            def f(receiver, value):
                attrs = dict(receiver)
                attrs[celtypes.StringType(field)] = value
                return celtypes.MapType(attrs)
            return f

        def check(receiver, verb):
            attrs = {str(k): str(v) for k, v in receiver.items()}
            attrs["verb"] = str(verb)
            self.checks.append(attrs)
            if self.broken:
                # What an unanswerable check is to CEL: an error value, which `x || error`
                # absorbs when x is true (and celpy, like Kubernetes, does).
                return celpy.CELEvalError("authorizer unavailable")
            in_scope = self.namespaces is None or attrs.get("namespace") in self.namespaces
            ok = in_scope and any(rule_allows(r, attrs.get("group", ""), attrs.get("resource", ""), attrs["verb"])
                                  for r in self.rules)
            return celtypes.MapType({celtypes.StringType("allowed"): celtypes.BoolType(ok)})

        def allowed(decision):
            return decision[celtypes.StringType("allowed")]

        return {"group": builder("group"), "resource": builder("resource"), "namespace": builder("namespace"),
                "name": builder("name"), "subresource": builder("subresource"), "check": check, "allowed": allowed}


class Policy:
    """The rendered ValidatingAdmissionPolicy, compiled with celpy."""

    def __init__(self, vap: dict):
        self.env = celpy.Environment()
        spec = vap["spec"]
        self.variables = [(v["name"], self.env.compile(v["expression"])) for v in spec.get("variables", [])]
        self.validations = [(self.env.compile(v["expression"]),
                             self.env.compile(v["messageExpression"]) if "messageExpression" in v else None,
                             v.get("message"))
                            for v in spec["validations"]]

    def admit(self, operation: str, user: str, new: dict | None, old: dict | None, authorizer: Authorizer,
              namespace: str = "dev-tools") -> tuple[bool, str | None]:
        functions = authorizer.functions()
        activation = {
            "request": celpy.json_to_cel({"operation": operation, "namespace": namespace,
                                          "userInfo": {"username": user, "groups": ["system:authenticated"]}}),
            "object": celpy.json_to_cel(new),
            "oldObject": celpy.json_to_cel(old),
            "authorizer": celtypes.MapType({}),
        }

        # Variables are lazy in Kubernetes: each is evaluated on first use, once. `variables`
        # is a map that evaluates a variable's program when the expression first reads it.
        class Lazy(celtypes.MapType):
            def __init__(self, programs):
                super().__init__({})
                self.programs, self.values = programs, {}

            def __getitem__(self, key):
                name = str(key)
                if name not in self.values:
                    try:
                        self.values[name] = self.programs[name].evaluate({**activation, "variables": self})
                    except celpy.CELEvalError as error:
                        # A failing variable is an error value where it is used (celpy's
                        # evaluate raises it at the top level).
                        self.values[name] = error
                return self.values[name]

            def __contains__(self, key):
                return str(key) in self.programs

        programs = {name: self.env.program(ast, functions=functions) for name, ast in self.variables}
        activation["variables"] = Lazy(programs)
        for expression, message_expression, message in self.validations:
            result = self.env.program(expression, functions=functions).evaluate(activation)
            if isinstance(result, celpy.CELEvalError):
                raise AssertionError(f"evaluation error: {result}")
            if not bool(result):
                text = message
                if message_expression is not None:
                    text = str(self.env.program(message_expression, functions=functions).evaluate(activation))
                return False, text
        return True, None


def vk(owner: str | None = "alice@acme.example", **spec) -> dict:
    body = {"models": {"allow": ["gw-*"]}, **spec}
    if owner is not None:
        body["owner"] = owner
    return {"apiVersion": "tollgate.dev/v1alpha1", "kind": "VirtualKey",
            "metadata": {"name": "k", "namespace": "dev-tools", "labels": {}}, "spec": body}


ALICE, BOB = "alice@acme.example", "bob@acme.example"
BOT = "system:serviceaccount:dev-tools:ci-bot"
OLD_ENOUGH = {"keyOwnerPolicy": {"allowWithout": True}}


class KeyOwnerPolicyRender(unittest.TestCase):
    def test_rendered_from_1_30_and_valid(self):
        for version in ("1.30.0", "1.33.0"):
            with self.subTest(kube_version=version):
                docs = render(kube_version=version)
                vap, binding = policy_docs(docs)
                tc.Validate.validate_all(self, f"key-owner policy on {version}", docs, version)
                self.assertEqual(vap["apiVersion"], "admissionregistration.k8s.io/v1")
                self.assertEqual(vap["spec"]["failurePolicy"], "Fail")
                (rule,) = vap["spec"]["matchConstraints"]["resourceRules"]
                self.assertEqual(rule["apiGroups"], ["tollgate.dev"])
                self.assertEqual(rule["resources"], ["virtualkeys"], "status is a subresource: not matched")
                self.assertEqual(sorted(rule["operations"]), ["CREATE", "UPDATE"])
                self.assertEqual(binding["spec"], {"policyName": POLICY, "validationActions": ["Deny"]})
                self.assertNotIn("matchResources", binding["spec"], "every namespace")

    def test_absent_below_1_30_only_when_acknowledged_and_the_notes_warn(self):
        for version in ("1.25.0", "1.29.9"):
            with self.subTest(kube_version=version):
                docs = render(OLD_ENOUGH, kube_version=version)
                self.assertEqual(find(docs, "ValidatingAdmissionPolicy") + find(docs, "ValidatingAdmissionPolicyBinding"), [])
        warning = notes({"keyOwnerPolicy": {"enabled": False, "allowWithout": True}})
        self.assertIn("WARNING: VirtualKey owners are not checked", warning)
        self.assertIn("keyOwnerPolicy.allowWithout accepts that", warning)
        self.assertNotIn("WARNING: VirtualKey owners", notes())
        self.assertIn(f"ValidatingAdmissionPolicy {POLICY}", notes())

    def test_no_silent_fail_open(self):
        """An offline render (helm template, Argo CD) may report an old Kubernetes for a new
        cluster: auto would then drop the policy while key-editor and the aggregated writers
        keep writing keys for anyone. Such a render fails, naming the ways out."""
        no_writers = {"rbac": {"keyRoles": False, "virtualKeyWriters": {"admin": False, "edit": False}}}
        for version in ("1.25.0", "1.29.9"):
            for values, what in ((None, "defaults (key roles)"),
                                 ({"rbac": {"keyRoles": False, "virtualKeyWriters": {"admin": True}}}, "namespace admins write"),
                                 ({"rbac": {"keyRoles": False, "virtualKeyWriters": {"edit": True}}}, "editors write")):
                with self.subTest(kube_version=version, values=what):
                    with self.assertRaisesRegex(HelmError, r"keyOwnerPolicy: the VirtualKey owner policy would not be rendered"
                                                           r"(?s:.*)keyOwnerPolicy.enabled true(?s:.*)keyOwnerPolicy.allowWithout true"):
                        render(values, kube_version=version)
            with self.subTest(kube_version=version, values="no VirtualKey writers"):
                docs = render(no_writers, kube_version=version)
                self.assertEqual(find(docs, "ValidatingAdmissionPolicy"), [])
        with self.subTest("aggregated writers but no aggregated roles"):
            render({"rbac": {"keyRoles": False, "aggregateClusterRoles": False, "virtualKeyWriters": {"admin": True}}},
                   kube_version="1.29.0")
        with self.subTest("enabled false needs the acknowledgement too"):
            with self.assertRaisesRegex(HelmError, "keyOwnerPolicy.enabled is false"):
                render({"keyOwnerPolicy": {"enabled": False}})
            render({"keyOwnerPolicy": {"enabled": False}, **no_writers})
        with self.subTest("the message names the version the render saw"):
            with self.assertRaisesRegex(HelmError, r"Kubernetes v1\.29\.9"):
                render(kube_version="1.29.9")

    def test_discovery_decides_too(self):
        """A cluster that serves the v1 API (helm install reads discovery; Argo CD passes
        --api-versions) gets the policy whatever version it reports."""
        docs = render(kube_version="1.29.0", api_versions=[VAP_API])
        policy_docs(docs)

    def test_switch(self):
        self.assertEqual(find(render({"keyOwnerPolicy": {"enabled": False, "allowWithout": True}}), "ValidatingAdmissionPolicy"), [])
        policy_docs(render({"keyOwnerPolicy": {"enabled": True}}, kube_version="1.29.0"))
        policy_docs(render({"keyOwnerPolicy": {"allowWithout": True}}))
        for bad in ("sometimes", "yes", 1):
            with self.subTest(enabled=bad):
                with self.assertRaisesRegex(HelmError, "enabled"):
                    chart().validate_schema({"keyOwnerPolicy": {"enabled": bad}})
        for bad in ("yes", 1, "auto"):
            with self.subTest(allowWithout=bad):
                with self.assertRaisesRegex(HelmError, "allowWithout"):
                    chart().validate_schema({"keyOwnerPolicy": {"allowWithout": bad}})


class KeyOwnerPolicyCel(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        docs = render()
        cls.vap, _ = policy_docs(docs)
        cls.policy = Policy(cls.vap)
        cls.roles = {d["metadata"]["name"]: d["rules"] for d in find(docs, "ClusterRole")}

    def authorizer(self, role: str | None, namespaces: set[str] | None = None, broken: bool = False) -> Authorizer:
        rules = CLUSTER_ADMIN if role == "cluster-admin" else self.roles.get(role, []) if role else []
        return Authorizer(rules, namespaces, broken)

    def test_every_expression_parses(self):
        spec = self.vap["spec"]
        expressions = [v["expression"] for v in spec["variables"]]
        for v in spec["validations"]:
            expressions += [v["expression"], v["messageExpression"]]
        for text in expressions:
            with self.subTest(expression=text):
                celpy.Environment().compile(text)

    def test_decisions(self):
        key_editor, key_admin = f"{RELEASE}-key-editor", f"{RELEASE}-key-admin"
        edited = lambda owner=ALICE: vk(owner, models={"allow": ["*"]})  # noqa: E731
        relabelled = vk(ALICE)
        relabelled["metadata"]["labels"]["team"] = "x"
        cases = [
            # (what, operation, user, role, new, old, admitted)
            ("own key", "CREATE", ALICE, key_editor, vk(ALICE), None, True),
            ("someone else's budget", "CREATE", BOB, key_editor, vk(ALICE), None, False),
            ("no owner", "CREATE", BOB, key_editor, vk(None), None, False),
            ("an edit-role user naming someone else", "CREATE", BOB, f"{RELEASE}-edit", vk(ALICE), None, False),
            ("a namespace admin naming someone else", "CREATE", BOB, f"{RELEASE}-admin", vk(ALICE), None, False),
            ("key admin, any owner", "CREATE", "platform-team", key_admin, vk(ALICE), None, True),
            ("key admin, no owner", "CREATE", "platform-team", key_admin, vk(None), None, True),
            ("cluster-admin", "CREATE", "kubernetes-admin", "cluster-admin", vk(BOB), None, True),
            ("GitOps controller bound to key-admin", "CREATE", "system:serviceaccount:argocd:argocd-application-controller",
             key_admin, vk(ALICE), None, True),
            ("owner changes own key", "UPDATE", ALICE, key_editor, edited(), vk(ALICE), True),
            ("changing another's key", "UPDATE", BOB, key_editor, edited(), vk(ALICE), False),
            ("taking over another's key", "UPDATE", BOB, key_editor, edited(BOB), vk(ALICE), False),
            ("giving one's key away", "UPDATE", ALICE, key_editor, vk(BOB), vk(ALICE), False),
            ("key admin changes any key", "UPDATE", "platform-team", key_admin, edited(BOB), vk(ALICE), True),
            ("metadata only (labels, finalizers, namespace clean-up)", "UPDATE", "system:serviceaccount:kube-system:namespace-controller",
             None, relabelled, vk(ALICE), True),
        ]
        for what, operation, user, role, new, old, admitted in cases:
            with self.subTest(what):
                got, message = self.policy.admit(operation, user, new, old, self.authorizer(role))
                self.assertIs(got, admitted, message)
                if not admitted:
                    self.assertIn(f"({user})", message, "the refusal names who asked")
                    self.assertIn(f"{RELEASE}-key-admin", message, "and who may")

    def decide(self, cases):
        for what, operation, user, role, new, old, admitted, says in cases:
            with self.subTest(what):
                got, message = self.policy.admit(operation, user, new, old, self.authorizer(role))
                self.assertIs(got, admitted, message)
                if not admitted:
                    self.assertIn(f"({user})", message, "the refusal names who asked")
                    self.assertIn(f"{RELEASE}-key-admin", message, "and who may")
                    self.assertIn(says, message, "and what the rule is")

    def test_mcp_and_capture_are_key_admin_settings(self):
        """spec.mcp grants McpServers with the platform's credentials and spec.capture overrides
        the audit capture (none switches it off): a writer who is no key admin sets neither,
        even on their own key."""
        editor, admin = f"{RELEASE}-key-editor", f"{RELEASE}-key-admin"
        github = [{"server": "github", "allow": ["get_*"]}]
        wide = [{"server": "github"}]
        mine = lambda **spec: vk(ALICE, **spec)  # noqa: E731
        says = "spec.mcp and spec.capture"
        self.decide([
            ("own key with an MCP grant", "CREATE", ALICE, editor, mine(mcp=github), None, False, says),
            ("own key with the API server's default mcp []", "CREATE", ALICE, editor, mine(mcp=[]), None, True, None),
            ("own key with capture none", "CREATE", ALICE, editor, mine(capture="none"), None, False, says),
            ("own key with capture full", "CREATE", ALICE, editor, mine(capture="full"), None, False, says),
            ("adding an MCP grant", "UPDATE", ALICE, editor, mine(mcp=github), mine(mcp=[]), False, says),
            ("widening a key admin's MCP grant", "UPDATE", ALICE, editor, mine(mcp=wide), mine(mcp=github), False, says),
            ("a key admin's MCP grant kept while models change", "UPDATE", ALICE, editor,
             mine(mcp=github, models={"allow": ["*"]}), mine(mcp=github), True, None),
            ("dropping every MCP grant", "UPDATE", ALICE, editor, mine(mcp=[]), mine(mcp=github), True, None),
            ("capture lowered", "UPDATE", ALICE, editor, mine(capture="none"), mine(capture="full"), False, says),
            ("capture removed (back to a lower default)", "UPDATE", ALICE, editor, mine(), mine(capture="full"), False, says),
            ("capture set later", "UPDATE", ALICE, editor, mine(capture="none"), mine(), False, says),
            ("a key admin's capture kept while models change", "UPDATE", ALICE, editor,
             mine(capture="full", models={"allow": ["*"]}), mine(capture="full"), True, None),
            ("a namespace admin's own key with an MCP grant", "CREATE", ALICE, f"{RELEASE}-admin", mine(mcp=github), None, False, says),
            ("key admin grants MCP and capture", "CREATE", "platform-team", admin, mine(mcp=github, capture="none"), None, True, None),
            ("key admin changes them", "UPDATE", "platform-team", admin, mine(mcp=wide, capture="full"),
             mine(mcp=github, capture="none"), True, None),
        ])

    def test_owners_cannot_undo_revocation(self):
        """enabled goes only true -> false and an expiry only earlier, unless a key admin."""
        editor, admin = f"{RELEASE}-key-editor", f"{RELEASE}-key-admin"
        mine = lambda **spec: vk(ALICE, **spec)  # noqa: E731
        edited = {"models": {"allow": ["*"]}}
        jan, jun = "2027-01-01T00:00:00Z", "2027-06-01T00:00:00Z"
        says = "spec.expiresAt"
        self.decide([
            ("re-enabling a disabled key", "UPDATE", ALICE, editor, mine(enabled=True), mine(enabled=False), False, says),
            ("re-enabling by dropping enabled", "UPDATE", ALICE, editor, mine(), mine(enabled=False), False, says),
            ("disabling one's own key", "UPDATE", ALICE, editor, mine(enabled=False), mine(enabled=True), True, None),
            ("a disabled key edited, still disabled", "UPDATE", ALICE, editor, mine(enabled=False, **edited),
             mine(enabled=False), True, None),
            ("a disabled key created", "CREATE", ALICE, editor, mine(enabled=False), None, True, None),
            ("removing the expiry", "UPDATE", ALICE, editor, mine(), mine(expiresAt=jan), False, says),
            ("nulling the expiry", "UPDATE", ALICE, editor, mine(expiresAt=None), mine(expiresAt=jan), False, says),
            ("postponing the expiry", "UPDATE", ALICE, editor, mine(expiresAt=jun), mine(expiresAt=jan), False, says),
            ("postponing by a second", "UPDATE", ALICE, editor, mine(expiresAt="2027-01-01T00:00:01Z"),
             mine(expiresAt=jan), False, says),
            ("bringing the expiry forward", "UPDATE", ALICE, editor, mine(expiresAt=jan), mine(expiresAt=jun), True, None),
            ("the same instant, written otherwise", "UPDATE", ALICE, editor, mine(expiresAt="2027-01-01T01:00:00+01:00", **edited),
             mine(expiresAt=jan), True, None),
            ("the expiry kept while models change", "UPDATE", ALICE, editor, mine(expiresAt=jan, **edited),
             mine(expiresAt=jan), True, None),
            ("an expiry set on a key that had none", "UPDATE", ALICE, editor, mine(expiresAt=jun), mine(), True, None),
            ("an expiry set on a key whose expiry was null", "UPDATE", ALICE, editor, mine(expiresAt=jun),
             mine(expiresAt=None), True, None),
            ("any expiry on create", "CREATE", ALICE, editor, mine(expiresAt="2099-01-01T00:00:00Z"), None, True, None),
            ("key admin re-enables and extends", "UPDATE", "platform-team", admin, mine(enabled=True, expiresAt=jun),
             mine(enabled=False, expiresAt=jan), True, None),
            ("key admin removes the expiry", "UPDATE", "platform-team", admin, mine(), mine(expiresAt=jan), True, None),
        ])

    def test_service_accounts_own_keys_only_by_a_key_admin(self):
        """A namespace admin can create ServiceAccounts; each would be a fresh owner with no
        user budget of its own. So a system: identity writes keys only as a key admin."""
        editor, admin = f"{RELEASE}-key-editor", f"{RELEASE}-key-admin"
        says = "ServiceAccount"
        self.decide([
            ("a ServiceAccount's own key", "CREATE", BOT, editor, vk(BOT), None, False, says),
            ("a ServiceAccount changing its own key", "UPDATE", BOT, editor, vk(BOT, models={"allow": ["*"]}), vk(BOT), False, says),
            ("another system: identity", "CREATE", "system:kube-scheduler", editor, vk("system:kube-scheduler"), None, False, says),
            ("a user named like a ServiceAccount owner", "CREATE", ALICE, editor, vk(BOT), None, False, "spec.owner"),
            ("a key admin gives a ServiceAccount a key", "CREATE", "platform-team", admin, vk(BOT), None, True, None),
            ("a ServiceAccount bound to key-admin", "CREATE", BOT, admin, vk(BOT), None, True, None),
            ("metadata-only updates still pass", "UPDATE", BOT, None, vk(BOT) | {"metadata": {"name": "k", "labels": {"a": "b"}}},
             vk(BOT), True, None),
        ])

    def test_an_owners_own_requests_do_not_need_the_authorizer(self):
        """With an authorizer that cannot answer, what an owner may do still passes: the
        decision comes from the cheap checks (and Kubernetes never makes the call)."""
        editor = f"{RELEASE}-key-editor"
        jan, jun = "2027-01-01T00:00:00Z", "2027-06-01T00:00:00Z"
        for what, operation, new, old in (
                ("create", "CREATE", vk(ALICE, mcp=[], expiresAt=jun), None),
                ("change", "UPDATE", vk(ALICE, models={"allow": ["*"]}, mcp=[{"server": "github"}], capture="full"),
                 vk(ALICE, mcp=[{"server": "github"}], capture="full")),
                ("disable and expire sooner", "UPDATE", vk(ALICE, enabled=False, expiresAt=jan), vk(ALICE, expiresAt=jun))):
            with self.subTest(what):
                got, message = self.policy.admit(operation, ALICE, new, old, self.authorizer(editor, broken=True))
                self.assertTrue(got, message)

    def test_key_admin_is_per_namespace(self):
        """A RoleBinding of key-admin in one namespace makes a key admin there only."""
        authorizer = self.authorizer(f"{RELEASE}-key-admin", {"team-a"})
        self.assertTrue(self.policy.admit("CREATE", BOB, vk(ALICE), None, authorizer, namespace="team-a")[0])
        self.assertFalse(self.policy.admit("CREATE", BOB, vk(ALICE), None, authorizer, namespace="team-b")[0])

    def test_the_check_asks_for_assign_owner_on_virtualkeys_in_the_namespace(self):
        authorizer = self.authorizer(None)
        self.policy.admit("CREATE", BOB, vk(ALICE), None, authorizer, namespace="team-a")
        self.assertEqual(authorizer.checks, [{"group": "tollgate.dev", "resource": "virtualkeys",
                                              "namespace": "team-a", "verb": "assign-owner"}])

    def test_the_authorizer_is_asked_last(self):
        """An authorizer call is the costly part of the policy (about 350,000 of the 1,000,000
        cost units one expression may use). Kubernetes evaluates variables lazily and `||` from
        the left, so with the check in the last operand an owner's own request never makes it
        (celpy evaluates both operands of `||`, so this is checked on the text)."""
        text = yaml.safe_dump(self.vap["spec"])
        self.assertEqual(text.count("authorizer."), 1, "one call, in the variable keyAdmin (evaluated once per request)")
        (key_admin,) = [v for v in self.vap["spec"]["variables"] if "authorizer." in v["expression"]]
        self.assertEqual(key_admin["name"], "keyAdmin")
        self.assertEqual(len(self.vap["spec"]["validations"]), 3)
        for validation in self.vap["spec"]["validations"]:
            self.assertTrue(validation["expression"].startswith("variables.specUnchanged ||"), validation)
            self.assertTrue(validation["expression"].endswith("|| variables.keyAdmin"), validation)
            self.assertEqual(validation["expression"].count("variables.keyAdmin"), 1, validation)
        for variable in self.vap["spec"]["variables"]:
            if variable["name"] != "keyAdmin":
                self.assertNotIn("variables.keyAdmin", variable["expression"], variable["name"])


class KeyRoles(unittest.TestCase):
    """Who may write VirtualKeys at all."""

    def verbs(self, docs: list[dict], role: str, resource: str = "virtualkeys") -> set[str]:
        return {v for _, r, v, _ in grants(one(docs, "ClusterRole", role)["rules"]) if r == resource}

    def test_admin_and_edit_read_virtual_keys_only_by_default(self):
        """Namespace admins are tenants too: with VirtualKey writes they could also bind
        key-editor to ServiceAccounts they create (RBAC lets anyone grant what they hold)."""
        docs = render()
        self.assertEqual(self.verbs(docs, f"{RELEASE}-edit"), {"get", "list", "watch"})
        self.assertEqual(self.verbs(docs, f"{RELEASE}-admin"), {"get", "list", "watch"})
        self.assertLessEqual(WRITE, self.verbs(docs, f"{RELEASE}-edit", "teams"), "the cluster-scoped kinds stay editable")
        self.assertLessEqual(WRITE, self.verbs(docs, f"{RELEASE}-admin", "teams"))
        docs = render({"rbac": {"virtualKeyWriters": {"admin": True}}})
        self.assertLessEqual(WRITE | {"delete"}, self.verbs(docs, f"{RELEASE}-admin"))
        self.assertEqual(self.verbs(docs, f"{RELEASE}-edit"), {"get", "list", "watch"})
        docs = render({"rbac": {"virtualKeyWriters": {"edit": True, "admin": False}}})
        tc.Validate.validate_all(self, "virtualKeyWriters switched", docs)
        self.assertLessEqual(WRITE | {"delete"}, self.verbs(docs, f"{RELEASE}-edit"))
        self.assertEqual(self.verbs(docs, f"{RELEASE}-admin"), {"get", "list", "watch"})
        self.assertLessEqual(WRITE, self.verbs(docs, f"{RELEASE}-admin", "budgets"))

    def test_key_roles(self):
        docs = render()
        admin, editor = one(docs, "ClusterRole", f"{RELEASE}-key-admin"), one(docs, "ClusterRole", f"{RELEASE}-key-editor")
        self.assertLessEqual(WRITE | {"assign-owner"}, self.verbs(docs, f"{RELEASE}-key-admin"))
        self.assertLessEqual(WRITE, self.verbs(docs, f"{RELEASE}-key-editor"))
        self.assertNotIn("assign-owner", self.verbs(docs, f"{RELEASE}-key-editor"))
        for role in (admin, editor):
            self.assertFalse([k for k in role["metadata"]["labels"] if k.startswith("rbac.authorization.k8s.io/aggregate")],
                             "granted by explicit bindings only")
            self.assertEqual({r for _, r, _, _ in grants(role["rules"])}, {"virtualkeys"})
        # No role the chart aggregates into built-in roles makes a key admin.
        for role in find(docs, "ClusterRole"):
            if any(k.startswith("rbac.authorization.k8s.io/aggregate") for k in role["metadata"]["labels"]):
                self.assertNotIn("assign-owner", {v for _, _, v, _ in grants(role["rules"])}, role["metadata"]["name"])
        self.assertEqual(find(render({"rbac": {"keyRoles": False}}), "ClusterRole", f"{RELEASE}-key-admin"), [])

    def test_all_resources_still_readable(self):
        docs = render()
        for level in ("admin", "edit", "view"):
            for resource in TOLLGATE_RESOURCES:
                self.assertLessEqual({"get", "list", "watch"}, self.verbs(docs, f"{RELEASE}-{level}", resource), (level, resource))


class TeamlessKeys(unittest.TestCase):
    """--teamless-keys: where keys without a team compile (the operator's default, deny, is
    explicit in the chart so that a values change is visible in the Deployment)."""

    def test_flag_follows_the_value(self):
        self.assertEqual(tc.flag_values(tc.operator_args(render()), "--teamless-keys"), ["deny"])
        for value in ("allow", "tollgate.dev/sandbox=true", "env in (dev,sandbox)"):
            with self.subTest(teamlessKeys=value):
                self.assertEqual(tc.flag_values(tc.operator_args(render({"operator": {"teamlessKeys": value}})), "--teamless-keys"),
                                 [value])
        self.assertEqual(tc.flag_values(tc.operator_args(tc.rendered("full")), "--teamless-keys"),
                         [tc.full_values()["operator"]["teamlessKeys"]])
        for bad in ("", 1):
            with self.subTest(teamlessKeys=bad):
                with self.assertRaisesRegex(HelmError, "teamlessKeys"):
                    chart().validate_schema({"operator": {"teamlessKeys": bad}})


class OperatorWatchesNamespaces(unittest.TestCase):
    """Team.spec.allowedNamespaces (a namespace label selector) is resolved by the operator from
    the namespaces' labels: it needs list and watch on every namespace, not only on names the
    chart knows. Both the chart and operator/deploy/rbac.yaml grant it."""

    def check(self, rules: list[dict], where: str):
        granted = grants(rules)
        for verb in ("get", "list", "watch"):
            self.assertIn(("", "namespaces", verb, None), granted, f"{where}: {verb} namespaces (cluster-wide, no resourceNames)")

    def test_chart(self):
        for values in (None, {"webhook": {"enabled": False}, "gateway": {"enabled": False}}):
            with self.subTest(values=values):
                docs = render(values)
                role = one(docs, "ClusterRole", f"{RELEASE}-operator")
                self.check(role["rules"], "chart ClusterRole")
                binding = one(docs, "ClusterRoleBinding", f"{RELEASE}-operator")
                self.assertEqual(binding["subjects"][0]["namespace"], NAMESPACE)

    def test_deploy_rbac(self):
        (role,) = [d for d in yaml.safe_load_all(DEPLOY_RBAC.read_text()) if d and d["kind"] == "ClusterRole"]
        self.check(role["rules"], "operator/deploy/rbac.yaml")


if __name__ == "__main__":
    unittest.main()
