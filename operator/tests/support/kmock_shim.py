"""A stand-in Kubernetes API server for the operator's tests: kmock's KubernetesEmulator
plus what it lacks for a controller (kmock 0.8):

* resourceVersion (a global counter), uid, creationTimestamp and generation on every write,
  and a real resourceVersion on lists;
* the status subresource: PATCH .../status changes only `status`; a PATCH of the object
  itself ignores `status` (for the tollgate.dev kinds, which declare the subresource);
* server-side apply creates: a PATCH with application/apply-patch+yaml of a missing object
  creates it (kmock answers 404);
* label selectors (`key`, `key=value`, comma-separated) on lists and watches;
* garbage collection of dependants (ownerReferences) when their owner is deleted;
* JSON Patch (application/json-patch+json, RFC 6902, with `test` failures answered 422);
* the Namespace resource itself (kmock 0.8 parses `/api/v1/namespaces[/NAME]` as a
  namespace prefix; see `_parse_path`);
* a ResourceQuota's refusal, for failure tests: a Namespace annotated
  `kmock.test/refuse: configmaps,secrets` refuses creating those kinds in it with the 403
  Forbidden "exceeded quota" the quota admission plugin answers;
* immutable ConfigMaps: any update of one with `immutable: true` is refused with 422, as the
  API server does ("field is immutable when `immutable` is set");
* metadata-only lists and watches (`Accept: application/json;as=PartialObjectMetadataList`,
  what kube's `Api<PartialObjectMeta<_>>` asks for): objects are answered as
  `meta.k8s.io/v1 PartialObjectMetadata`, metadata only, so a client that relied on a spec it
  did not ask for would fail here as it would on a real API server.

* JSON Patch as a conditional write: a JSON Patch (its `test` operations included) is read,
  tested and stored as one step, so of concurrent patches testing the same
  `/metadata/resourceVersion` exactly one passes (the budget notifier's claims rely on it).

Not emulated (say so in reviews): field ownership / managedFields and apply conflicts (every
patch is a recursive dict merge, lists replaced), optimistic concurrency (resourceVersion
preconditions are ignored; use a JSON Patch `test`), admission (CRD OpenAPI and CEL validation, defaulting), RBAC,
watch bookmarks and timeouts, 410 Gone, field selectors, pagination, finalizers beyond kmock's.

Usage: python kmock_shim.py  -> prints the port on stdout, serves until stdin closes.
"""

import asyncio
import datetime
import sys
import uuid

import attrs
import jsonpatch
import kmock
from kmock._internal import enums, parsing

_kmock_parse_path = parsing.parse_path


def _parse_path(path: str) -> "parsing.ParsedPath":
    """`/api/v1/namespaces` and `/api/v1/namespaces/NAME` address Namespace objects."""
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and len(parts) <= 4:
        name = parts[3] if len(parts) == 4 else None
        return parsing.ParsedPath("", "v1", "namespaces", None, name, None)
    return _kmock_parse_path(path)


parsing.parse_path = _parse_path

STATUS_GROUPS = {"tollgate.dev"}
RESOURCES = [
    "tollgate.dev/v1alpha1/virtualkeys", "tollgate.dev/v1alpha1/teams",
    "tollgate.dev/v1alpha1/budgets", "tollgate.dev/v1alpha1/modelproviders",
    "tollgate.dev/v1alpha1/modelroutes", "tollgate.dev/v1alpha1/mcpservers",
    "tollgate.dev/v1alpha1/auditsinks", "v1/secrets", "v1/configmaps", "v1/namespaces",
    "coordination.k8s.io/v1/leases", "events.k8s.io/v1/events",
    "admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
]


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _selector_matches(selector: str | None, obj: dict) -> bool:
    if not selector:
        return True
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in selector.split(","):
        term = term.strip()
        if "=" in term:
            k, v = term.split("=", 1)
            if labels.get(k.rstrip("=")) != v:
                return False
        elif term and term not in labels:
            return False
    return True


@attrs.define(kw_only=True)
class Shim(kmock.KubernetesEmulator):
    rv: int = 0
    patch_lock: asyncio.Lock = attrs.field(factory=asyncio.Lock, init=False)

    def _next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def _stored(self, request):
        key = (request.resource, request.namespace, request.name)
        if key in self.objects and not self.objects[key].deleted:
            return self.objects[key].raw
        return None

    def _evolve(self, request, **changes):
        """A changed request; kmock matches reactions by the identity of recorded requests."""
        new = attrs.evolve(request, **changes)
        for i, r in enumerate(self._requests):
            if r is request:
                self._requests[i] = new
        return new

    def _refused_by_quota(self, request) -> bool:
        """Whether the request's namespace refuses creating this kind (`kmock.test/refuse`)."""
        if request.namespace is None or request.resource.plural in (None, "namespaces"):
            return False
        for (resource, _, name), obj in self.objects.items():
            if resource.plural == "namespaces" and name == request.namespace and not obj.deleted:
                notes = (obj.raw.get("metadata") or {}).get("annotations") or {}
                return request.resource.plural in notes.get("kmock.test/refuse", "").split(",")
        return False

    async def _handle(self, request):
        if (request.resource is not None and request.name is not None
                and "json-patch" in request.headers.get("Content-Type", "")):
            # Read, test and store as one step: two patches must not pass one `test`.
            async with self.patch_lock:
                return await self._handle_one(request)
        return await self._handle_one(request)

    async def _handle_one(self, request):
        if request.resource is None:
            return await super()._handle(request)
        action = request.action
        data = request.data if isinstance(request.data, dict) else None
        is_apply = "apply-patch" in request.headers.get("Content-Type", "")
        if "json-patch" in request.headers.get("Content-Type", "") and request.name is not None:
            current = self._stored(request)
            if current is None:
                raise kmock.KubernetesError(status=404, reason="NotFound", message="not found")
            try:
                patched = jsonpatch.apply_patch(current, request.data or [])
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
                raise kmock.KubernetesError(status=422, reason="Invalid", message=str(e))
            # The whole patched object replaces the stored one (lists included).
            data = patched
            request = self._evolve(request, data=data)
        if action == enums.action.UPDATE and data is not None:
            current = self._stored(request)
            if current is None and is_apply and request.subresource is None:
                action = enums.action.CREATE  # server-side apply creates
            elif current is not None:
                if request.resource.plural == "configmaps" and current.get("immutable") is True:
                    raise kmock.KubernetesError(
                        status=422, reason="Invalid",
                        message=f'ConfigMap "{request.name}" is invalid: data: Forbidden: '
                                "field is immutable when `immutable` is set")
                has_status = request.resource.group in STATUS_GROUPS
                if request.subresource == "status":
                    data = {"status": data.get("status")}
                elif has_status:
                    data = {k: v for k, v in data.items() if k != "status"}
                meta = dict(data.get("metadata") or {})
                for k in ("uid", "creationTimestamp", "generation", "resourceVersion"):
                    meta.pop(k, None)
                meta["resourceVersion"] = self._next_rv()
                spec_changed = "spec" in data and data["spec"] != current.get("spec")
                if spec_changed:
                    meta["generation"] = (current.get("metadata") or {}).get("generation", 1) + 1
                data = {**data, "metadata": meta}
                # Lists are replaced, not merged: send them whole (kmock would merge dicts only).
                request = self._evolve(request, data=data)
        if action == enums.action.CREATE and data is not None and self._refused_by_quota(request):
            raise kmock.KubernetesError(
                status=403, reason="Forbidden",
                message=f"{request.resource.plural} is forbidden: exceeded quota: compute-quota")
        if action == enums.action.CREATE and data is not None:
            meta = dict(data.get("metadata") or {})
            meta.setdefault("namespace", request.namespace)
            if meta.get("namespace") is None:
                meta.pop("namespace")
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1,
                        resourceVersion=self._next_rv())
            data = {**data, "metadata": meta}
            if "kind" not in data:
                data["kind"] = ""
            request = self._evolve(request, data=data, action=enums.action.CREATE,
                                   name=None, subresource=None)
        deleted_uid = None
        if action == enums.action.DELETE and request.name is not None:
            current = self._stored(request)
            if current is not None:
                deleted_uid = (current.get("metadata") or {}).get("uid")
        response = await super()._handle(request)
        if deleted_uid:
            await self._collect_garbage(deleted_uid)
        return response

    async def _render_error(self, exc):
        # Kubernetes' machine-readable reasons (clients match on them, e.g. `get_opt`).
        if isinstance(exc, kmock.KubernetesError):
            reason = {404: "NotFound", 409: "AlreadyExists"}.get(exc.status, exc.reason)
            exc = attrs.evolve(exc, reason=reason)
        return await super()._render_error(exc)

    async def _collect_garbage(self, owner_uid: str) -> None:
        async with self._lock:
            doomed = [
                key for key, obj in self.objects.items()
                if not obj.deleted and any(
                    o.get("uid") == owner_uid
                    for o in ((obj.raw.get("metadata") or {}).get("ownerReferences") or []))
            ]
            for key in doomed:
                raw = self.objects[key].raw
                self.objects[key].delete()
                await self._buses[key[0]].put({"type": "DELETED", "object": raw})

    async def _serve_list(self, request):
        result = await super()._serve_list(request)
        selector = request.params.get("labelSelector")
        result["items"] = [o for o in result["items"] if _selector_matches(selector, o)]
        result["metadata"] = {"resourceVersion": str(self.rv)}
        if _metadata_only(request):
            result["apiVersion"], result["kind"] = "meta.k8s.io/v1", "PartialObjectMetadataList"
            result["items"] = [_partial(o) for o in result["items"]]
        return result

    async def _serve_watch(self, request):
        selector = request.params.get("labelSelector")
        async for event in super()._serve_watch(request):
            if isinstance(event, dict) and not _selector_matches(selector, event.get("object") or {}):
                continue
            if isinstance(event, dict) and _metadata_only(request) and isinstance(event.get("object"), dict):
                event = {**event, "object": _partial(event["object"])}
            yield event


def _metadata_only(request) -> bool:
    accept = next((v for k, v in request.headers.items() if k.lower() == "accept"), "") or ""
    return "as=PartialObjectMetadata" in accept


def _partial(obj: dict) -> dict:
    return {"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": obj.get("metadata") or {}}


async def main() -> None:
    async with Shim() as handler, kmock.Server(handler) as server:
        for r in RESOURCES:
            handler.resources[r] = {}
        print(server.port, flush=True)
        loop = asyncio.get_running_loop()
        # Serve until the test closes our stdin (or kills us).
        await loop.run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    asyncio.run(main())
