"""A Kubernetes API stand-in for Ferry's operator tests, built on kmock 0.8.

kmock (https://pypi.org/project/kmock/) serves a Kubernetes API over real HTTP: discovery,
/version, Kubernetes `Status` errors. Its own object store (KubernetesEmulator) is too thin for
a controller built on kube-runtime: stored objects get no resourceVersion, uid or namespace (so
watchers never see live events), label selectors are ignored, a missing object answers
`Object Not Found` (kube-rs looks for `NotFound`), PUT, conflicts and generations are not
served, and its path parser misreads `/api/v1/namespaces[/name]`. This subclass of kmock's
KubernetesScaffold keeps kmock's HTTP server and discovery, routes resource paths to a store of
its own, and behaves like the API server where Ferry depends on it:

- metadata.uid, namespace, creationTimestamp; one cluster-wide resourceVersion that grows on
  every write; metadata.generation, bumped when anything but metadata and status changes
  (on every kind: the API server keeps generations only for some, e.g. not ConfigMaps);
- the status subresource (`/status`) for resources that have one: writes there change only
  `.status`, writes to the object leave `.status` alone;
- create (409 AlreadyExists), get (404 NotFound), list and watch with label selectors (`k=v`,
  `k!=v`, `k`, `!k`, `k in (a,b)`) and `metadata.name`/`metadata.namespace` field selectors,
  watch from a resourceVersion (an ERROR event with 410 Expired when it is older than the
  kept history), watch timeouts, no bookmarks; list ignores `limit` (one page); replace (PUT)
  and patches with optimistic concurrency (409 Conflict when the body names a stale
  resourceVersion); merge patch (RFC 7386), JSON patch, strategic merge patch (as a merge
  patch: no list merge keys), server-side apply (see `_apply`);
- deletion with finalizers and deletionTimestamp; garbage collection of dependents by
  ownerReferences, at once and always as a background cascade (propagationPolicy and
  blockOwnerDeletion are ignored); deleting a namespace deletes everything in it at once
  (no Terminating phase);
- Secrets: `stringData` is folded into base64 `data`, as the API server does.

Not served, so tests that need them run only against a real API server: schema and CEL
validation, admission, RBAC (every request is allowed), field managers and conflicts of
server-side apply, the token subresource, and every built-in controller (no Job controller,
no kubelet: the test harness plays them).

Run: python kapi.py [--port N] [--port-file PATH] [--kubeconfig PATH]: it listens on 127.0.0.1
(a free port unless given) and, once listening, writes a kubeconfig for itself and the port.
"""

import argparse
import asyncio
import base64
import bisect
import copy
import datetime
import json
import os
import random
import re
import sys
import traceback
import uuid
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import jsonpointer
import kmock

# (group, version, plural) -> (kind, namespaced, has a status subresource)
RESOURCES = {
    ("", "v1", "namespaces"): ("Namespace", False, True),
    ("", "v1", "secrets"): ("Secret", True, False),
    ("", "v1", "configmaps"): ("ConfigMap", True, False),
    ("", "v1", "serviceaccounts"): ("ServiceAccount", True, False),
    ("", "v1", "pods"): ("Pod", True, True),
    ("", "v1", "events"): ("Event", True, False),
    ("events.k8s.io", "v1", "events"): ("Event", True, False),
    ("batch", "v1", "jobs"): ("Job", True, True),
    ("rbac.authorization.k8s.io", "v1", "roles"): ("Role", True, False),
    ("rbac.authorization.k8s.io", "v1", "rolebindings"): ("RoleBinding", True, False),
    ("coordination.k8s.io", "v1", "leases"): ("Lease", True, False),
    ("ferry.dev", "v1alpha1", "migrationjobs"): ("MigrationJob", True, True),
    ("ferry.dev", "v1alpha1", "bucketsyncs"): ("BucketSync", True, True),
    ("apiextensions.k8s.io", "v1", "customresourcedefinitions"):
        ("CustomResourceDefinition", False, True),
}

HISTORY = 20000  # watch events kept for watches that resume from a resourceVersion


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def json_patch(doc: dict, ops: list) -> dict:
    """RFC 6902, as the API server applies it: a `test` of null passes on a missing path
    (kube-runtime's finalizer helper tests `/metadata/finalizers` against null)."""
    kept = []
    for op in ops:
        if op.get("op") == "test" and op.get("value") is None:
            try:
                if jsonpointer.resolve_pointer(doc, op["path"]) is not None:
                    raise ApiError(422, "Invalid", f"the test of {op['path']} against null failed")
            except jsonpointer.JsonPointerException:
                pass
            continue
        kept.append(op)
    try:
        return jsonpatch.apply_patch(copy.deepcopy(doc), kept)
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as e:
        raise ApiError(422, "Invalid", f"the JSON patch does not apply: {e}")


class Selector:
    """A label selector and the two field selectors kube clients use."""

    def __init__(self, labels: str, fields: str):
        self.terms = []
        # Split on commas outside parentheses.
        for term in re.findall(r"(?:[^,(]|\([^)]*\))+", labels or ""):
            term = term.strip()
            if m := re.fullmatch(r"([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)", term):
                values = {v.strip() for v in m.group(3).split(",")}
                self.terms.append((m.group(1), m.group(2), values))
            elif m := re.fullmatch(r"([\w./-]+)\s*(==|=|!=)\s*([\w./-]*)", term):
                self.terms.append((m.group(1), "!=" if m.group(2) == "!=" else "=", m.group(3)))
            elif term.startswith("!"):
                self.terms.append((term[1:], "absent", None))
            elif term:
                self.terms.append((term, "exists", None))
        self.fields = {}
        for term in (fields or "").split(","):
            if "=" in term:
                k, v = term.split("=", 1)
                self.fields[k.strip().rstrip("=")] = v.strip()

    def matches(self, obj: dict) -> bool:
        meta = obj.get("metadata", {})
        labels = meta.get("labels") or {}
        for key, op, value in self.terms:
            have = labels.get(key)
            if op == "=":
                ok = have == value
            elif op == "!=":  # as on the API server, also true when the label is absent
                ok = have != value
            elif op == "in":
                ok = have in value
            elif op == "notin":
                ok = have not in value
            elif op == "exists":
                ok = key in labels
            else:  # "absent"
                ok = key not in labels
            if not ok:
                return False
        for path, value in self.fields.items():
            if path == "metadata.name" and meta.get("name") != value:
                return False
            if path == "metadata.namespace" and meta.get("namespace") != value:
                return False
        return True


@attrs.define
class Req:
    """A resource request (kmock's own path parser misreads `/api/v1/namespaces[/x]`)."""
    method: str
    group: str
    version: str
    plural: str
    namespace: str | None
    name: str | None
    subresource: str | None
    params: dict
    headers: dict
    data: Any
    raw: aiohttp.web.BaseRequest


def parse_path(path: str) -> tuple | None:
    """(group, version, plural, namespace, name, subresource) of a resource path, else None."""
    parts = path.strip("/").split("/")
    if parts[:1] == ["api"] and len(parts) >= 3:
        group, version, rest = "", parts[1], parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 4:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    plural, name, sub = rest[0], (rest[1] if len(rest) > 1 else None), "/".join(rest[2:]) or None
    return group, version, plural, namespace, name, sub


@attrs.define(kw_only=True)
class FerryKubeApi(kmock.KubernetesScaffold):
    """kmock's scaffold (HTTP, path parsing, discovery, Status errors) with a faithful store."""

    objects: dict = attrs.field(factory=dict)  # (group, plural, ns, name) -> object
    rv: int = 0
    history: list = attrs.field(factory=list)  # (rv, group, plural, event)
    # Set (and replaced by a fresh one) on every write. An Event, not a Condition: a watch
    # whose wait times out as its client goes away (a cancellation racing the timeout in
    # asyncio.wait_for) could leave a Condition's lock held, and every write then hung.
    changed: asyncio.Event = attrs.field(factory=asyncio.Event)
    # The most seconds a watch event waits before it is sent (a random part of it, drawn
    # anew for each batch of each watch, so events keep their order within a watch but not
    # across watches). The API server's watch caches lag its writes, each resource by its
    # own amount, so a controller may reconcile from caches that lack its own last writes,
    # or hold a later write of one resource and not an earlier one of another; a stand-in
    # that streams every write at once would hide such races (see --watch-delay).
    watch_delay: float = 0.0

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for (group, version, plural), (kind, namespaced, status) in RESOURCES.items():
            self.resources[f"{group}/{version}/{plural}"] = kmock.ResourceInfo(
                kind=kind, namespaced=namespaced,
                subresources={"status"} if status else set(),
                verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
            )

    # ---- request dispatch

    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        parsed = parse_path(raw.path)
        if parsed is None or (parsed[0], parsed[1], parsed[2]) not in RESOURCES:
            return await super().__call__(raw)  # discovery, /version, unknown paths: kmock's
        body = await raw.read()
        try:
            data = json.loads(body) if body else None
        except ValueError:
            return await self._error(400, "BadRequest", "the body is not JSON")
        req = Req(raw.method.upper(), *parsed, dict(raw.query), dict(raw.headers), data, raw)
        try:
            return await self._serve(req)
        except ApiError as e:
            return await self._error(e.code, e.reason, e.message)
        except Exception as e:  # a bug of the stand-in: say so in its log and to the client
            traceback.print_exc(file=sys.stderr)
            return await self._error(500, "InternalError", f"the stand-in failed: {e!r}")

    async def _serve(self, request: Req) -> aiohttp.web.StreamResponse:
        method = request.method
        if request.name is None:
            if method == "GET" and request.params.get("watch") in ("1", "true"):
                return await self._watch(request)
            if method == "GET":
                return self._json(self._list(request))
            if method == "POST":
                return self._json(await self._create(request, request.data or {}), 201)
            if method == "DELETE":
                return self._json(await self._delete_collection(request))
        else:
            if request.subresource not in (None, "status"):
                raise ApiError(404, "NotFound", f"subresource {request.subresource} is not served by the stand-in")
            if method == "GET":
                return self._json(self._get(request))
            if method == "PUT":
                return self._json(await self._replace(request, request.data or {}))
            if method == "PATCH":
                return self._json(await self._patch(request))
            if method == "DELETE":
                return self._json(await self._delete(self._key(request)))
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported here")

    def _json(self, obj: Any, status: int = 200) -> aiohttp.web.Response:
        return aiohttp.web.json_response(obj, status=status)

    async def _error(self, code: int, reason: str, message: str) -> aiohttp.web.StreamResponse:
        return aiohttp.web.json_response({
            "apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
            "code": code, "reason": reason, "message": message,
        }, status=code)

    # ---- helpers

    def _key(self, request: Req, name: str | None = None) -> tuple:
        return (request.group, request.plural, request.namespace, name or request.name)

    def _kind(self, request: Req) -> tuple[str, str, bool]:
        kind, _, status = RESOURCES[(request.group, request.version, request.plural)]
        api_version = f"{request.group}/{request.version}" if request.group else request.version
        return kind, api_version, status

    def _get(self, request: Req) -> dict:
        obj = self.objects.get(self._key(request))
        if obj is None:
            raise ApiError(404, "NotFound", f'{request.plural} "{request.name}" not found')
        return obj

    async def _emit(self, key: tuple, kind: str, obj: dict) -> None:
        self.history.append((self.rv, key[0], key[1], {"type": kind, "object": copy.deepcopy(obj)}))
        del self.history[:-HISTORY]
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()

    def _bump(self, obj: dict) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)

    # ---- reads

    def _list(self, request: Req) -> dict:
        kind, api_version, _ = self._kind(request)
        sel = Selector(request.params.get("labelSelector", ""), request.params.get("fieldSelector", ""))
        group, plural = request.group, request.plural
        items = [
            copy.deepcopy(o) for (g, p, ns, _), o in sorted(self.objects.items(), key=lambda kv: str(kv[0]))
            if g == group and p == plural and request.namespace in (None, ns) and sel.matches(o)
        ]
        return {"apiVersion": api_version, "kind": f"{kind}List",
                "metadata": {"resourceVersion": str(self.rv)}, "items": items}

    async def _watch(self, request: Req) -> aiohttp.web.StreamResponse:
        """A watch stream: newline-separated events, as the API server sends them.

        Without a resourceVersion (or with "0") it starts with the current objects as ADDED.
        With one, it sends only what happened after it; a resourceVersion older than the kept
        history gets an ERROR event with a 410 `Expired` Status inside a 200 stream, as the
        API server answers (kube-runtime's watcher relists on that, but retries a plain 410
        forever). Bookmarks are never sent (allowWatchBookmarks is optional for clients).
        The stream ends after `timeoutSeconds` (default 300 here; the API server picks a
        random 30-60 min)."""
        sel = Selector(request.params.get("labelSelector", ""), request.params.get("fieldSelector", ""))
        group, plural = request.group, request.plural
        since = request.params.get("resourceVersion", "")
        timeout = float(request.params.get("timeoutSeconds", "300"))
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request.raw)

        async def send(ev: dict) -> None:
            await response.write(json.dumps(ev).encode() + b"\n")

        pending: list[dict] = []
        if since in ("", "0"):
            pending = [{"type": "ADDED", "object": o} for o in self._list(request)["items"]]
            cursor = self.rv
        else:
            cursor = int(since)
            if cursor < self.rv and (not self.history or self.history[0][0] > cursor + 1):
                await send({"type": "ERROR", "object": {
                    "apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
                    "code": 410, "reason": "Expired",
                    "message": f"too old resource version: {cursor} ({self.rv})"}})
                return response
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while True:
                if pending and self.watch_delay:
                    await asyncio.sleep(random.uniform(0, self.watch_delay))
                for ev in pending:
                    await send(ev)
                # The history is in resourceVersion order: start right after the cursor.
                first = bisect.bisect_right(self.history, cursor, key=lambda h: h[0])
                pending = []
                for _, g, p, ev in self.history[first:]:
                    if g != group or p != plural:
                        continue
                    meta = ev["object"].get("metadata", {})
                    if request.namespace in (None, meta.get("namespace")) and sel.matches(ev["object"]):
                        pending.append(ev)
                cursor = self.rv
                if pending:
                    continue
                left = deadline - loop.time()
                if left <= 0:
                    break
                changed = self.changed
                if self.rv == cursor:  # nothing was written while this watch was sending
                    try:
                        await asyncio.wait_for(changed.wait(), timeout=min(left, 5))
                    except asyncio.TimeoutError:
                        pass
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response

    # ---- writes

    async def _create(self, request: Req, body: dict) -> dict:
        kind, api_version, _ = self._kind(request)
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        name = meta.get("name")
        if not name:
            raise ApiError(422, "Invalid", "metadata.name: Required value")
        namespaced = RESOURCES[(request.group, request.version, request.plural)][1]
        if namespaced:
            ns = request.namespace or meta.get("namespace") or "default"
            if ("", "namespaces", None, ns) not in self.objects and ns != "default":
                raise ApiError(404, "NotFound", f'namespaces "{ns}" not found')
            meta["namespace"] = ns
        else:
            ns = None
        key = (request.group, request.plural, ns, name)
        if key in self.objects:
            raise ApiError(409, "AlreadyExists", f'{request.plural} "{name}" already exists')
        obj["apiVersion"], obj["kind"] = api_version, kind
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now()
        meta["generation"] = 1
        for k in ("resourceVersion", "deletionTimestamp"):
            meta.pop(k, None)
        self._fold_secret(kind, obj)
        self._bump(obj)
        self.objects[key] = obj
        await self._emit(key, "ADDED", obj)
        return obj

    @staticmethod
    def _precondition(request: Req, current: dict, new: dict) -> None:
        """Optimistic concurrency: a write whose body carries a metadata.resourceVersion
        (a PUT, or a patch that sets it) must name the stored one, else 409 Conflict. Without
        one, a write is unconditional, as on the API server for these resources."""
        want = (new.get("metadata") or {}).get("resourceVersion")
        if want and want != current["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {request.plural} "{request.name}": the object has been modified; please apply your changes to the latest version and try again')

    async def _replace(self, request: Req, body: dict) -> dict:
        current = self._get(request)
        self._precondition(request, current, body)
        return await self._write(request, current, copy.deepcopy(body))

    async def _patch(self, request: Req) -> dict:
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip()
        body = request.data
        if ctype == "application/apply-patch+yaml":
            return await self._apply(request, body or {})
        current = self._get(request)
        if ctype == "application/json-patch+json":
            new = json_patch(current, body or [])
        else:  # merge-patch+json; strategic-merge-patch+json is served as a merge patch
            new = merge_patch(current, body or {})
        self._precondition(request, current, new)
        return await self._write(request, current, new)

    async def _apply(self, request: Req, body: dict) -> dict:
        """Server-side apply, simplified: create when absent, else merge the applied fields in.
        Fields dropped from an applied configuration are not removed (there are no field
        managers), and there are no apply conflicts. The body must be JSON (kube-rs sends
        JSON; YAML, which kubectl sends, gets 400 here)."""
        key = self._key(request)
        if key not in self.objects:
            if request.subresource == "status":
                self._get(request)  # 404
            body = copy.deepcopy(body)
            body.setdefault("metadata", {})["name"] = request.name
            return await self._create(request, body)
        current = self.objects[key]
        return await self._write(request, current, merge_patch(current, body))

    async def _write(self, request: Req, current: dict, new: dict) -> dict:
        kind, api_version, has_status = self._kind(request)
        key = self._key(request)
        if has_status:
            if request.subresource == "status":
                new = {**current, "status": new.get("status")}
            else:
                new = {**new, "status": current.get("status")}
            if new.get("status") is None:
                new.pop("status", None)
        meta = new.setdefault("metadata", {})
        old_meta = current["metadata"]
        # The server owns these.
        for k in ("uid", "creationTimestamp", "namespace", "name", "deletionTimestamp"):
            if k in old_meta:
                meta[k] = old_meta[k]
            else:
                meta.pop(k, None)
        new["apiVersion"], new["kind"] = api_version, kind
        self._fold_secret(kind, new)
        body_of = lambda o: {k: v for k, v in o.items() if k not in ("metadata", "status")}
        meta["generation"] = old_meta.get("generation", 1) + (body_of(new) != body_of(current))
        meta["resourceVersion"] = old_meta["resourceVersion"]
        if new == current:
            return current  # a no-op write changes nothing, not even the resourceVersion
        self._bump(new)
        self.objects[key] = new
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            await self._remove(key)
        else:
            await self._emit(key, "MODIFIED", new)
        return new

    def _fold_secret(self, kind: str, obj: dict) -> None:
        if kind == "Secret" and obj.get("stringData"):
            data = obj.setdefault("data", {}) or {}
            for k, v in obj.pop("stringData").items():
                data[k] = base64.b64encode(v.encode()).decode()
            obj["data"] = data

    async def _delete(self, key: tuple) -> dict:
        obj = self.objects.get(key)
        if obj is None:
            raise ApiError(404, "NotFound", f'{key[1]} "{key[3]}" not found')
        meta = obj["metadata"]
        if meta.get("finalizers"):
            if not meta.get("deletionTimestamp"):
                meta["deletionTimestamp"] = now()
                meta["deletionGracePeriodSeconds"] = 0
                self._bump(obj)
                await self._emit(key, "MODIFIED", obj)
            return obj
        await self._remove(key)
        return obj

    async def _remove(self, key: tuple) -> None:
        obj = self.objects.pop(key, None)
        if obj is None:
            return
        self._bump(obj)
        await self._emit(key, "DELETED", obj)
        uid = obj["metadata"].get("uid")
        # Garbage collection: dependents go too (background propagation), and so does
        # everything in a deleted namespace.
        for k, o in list(self.objects.items()):
            owners = o.get("metadata", {}).get("ownerReferences") or []
            in_ns = key[1] == "namespaces" and k[2] == key[3]
            if in_ns or any(r.get("uid") == uid for r in owners):
                if k in self.objects:
                    if in_ns:
                        self.objects[k]["metadata"]["finalizers"] = []
                    await self._delete(k)

    async def _delete_collection(self, request: Req) -> dict:
        listed = self._list(request)
        for o in listed["items"]:
            m = o["metadata"]
            await self._delete((request.group, request.plural, m.get("namespace"), m["name"]))
        return listed


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


KUBECONFIG = """apiVersion: v1
kind: Config
current-context: kapi
clusters: [{{name: kapi, cluster: {{server: "http://127.0.0.1:{port}"}}}}]
users: [{{name: kapi, user: {{token: stand-in}}}}]  # any token: nothing is checked
contexts: [{{name: kapi, context: {{cluster: kapi, user: kapi}}}}]
"""


def write_atomically(path: str, text: str) -> None:
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0, help="the port (default: a free one)")
    ap.add_argument("--port-file", help="write the port here once listening")
    ap.add_argument("--kubeconfig", help="write a kubeconfig for the stand-in here (plain http)")
    ap.add_argument("--watch-delay", type=float, default=0.0,
                    help="the most seconds a watch event lags its write (random, per watch)")
    args = ap.parse_args()
    api = FerryKubeApi(watch_delay=args.watch_delay)
    # kmock's Server listens on 127.0.0.1.
    async with api, kmock.Server(api, port=args.port) as server:
        # The kubeconfig first: a waiter that sees the port file may use it at once.
        if args.kubeconfig:
            write_atomically(args.kubeconfig, KUBECONFIG.format(port=server.port))
        if args.port_file:
            write_atomically(args.port_file, str(server.port))
        print(f"serving the Kubernetes API stand-in on http://127.0.0.1:{server.port}", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
