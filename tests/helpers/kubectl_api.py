"""An emulated Kubernetes API server that kubectl itself can use: kmock's ``KubernetesEmulator`` served
from a thread of the test process, plus the few things kubectl needs that kmock 0.8 does not serve.

What is added, and why (each one found by running kubectl against plain kmock):

- ``/api/v1/namespaces[/NAME[/status|finalize]]`` is the cluster-scoped Namespace resource; kmock's
  path parser reads ``namespaces/NAME`` as "in namespace NAME" and fails on it (``parse_path`` is
  wrapped while the server runs).
- The core API's resource list names its group-version ``v1`` (kmock: ``/v1``, which kubectl rejects).
- Lists carry ``kind: <Kind>List`` and ``apiVersion`` (kubectl refuses a list without a kind).
- A minimal OpenAPI v3 index (``/openapi/v3`` and one document per group-version) whose PATCH
  operations declare the ``fieldValidation`` query parameter: kubectl then leaves field validation to
  the server (``--validate=strict`` sends ``fieldValidation=Strict``) instead of downloading full
  schemas for client-side validation. kmock does not validate objects; tests validate what was stored.
- ``kubectl patch --type json`` (RFC 6902 JSON patch), applied to the stored object; a change of
  ``spec`` bumps ``metadata.generation`` when the object has one, as the API server does.

Everything else (create, get, list, watch, merge patch, delete, discovery from the declared
resources) is kmock's own emulation. Status is set by the test, as the controllers would, through
the ``/status`` subresource (:meth:`KubeAPI.patch_status`).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import attrs
import kmock
from kmock._internal import parsing

NAMESPACES_PATH = re.compile(r"^/api/v1/namespaces(?:/([^/]+)(?:/(status|finalize))?)?/?$")
VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}


def _parse_path(original):
    def parse_path(path: str):
        match = NAMESPACES_PATH.match(path)
        if match:
            return parsing.ParsedPath("", "v1", "namespaces", None, match[1], match[2])
        return original(path)

    return parse_path


def _merge_diff(old, new) -> dict:
    """The JSON merge patch that turns ``old`` into ``new``."""
    patch = {key: None for key in old if key not in new}
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(old.get(key), dict):
            sub = _merge_diff(old[key], value)
            if sub:
                patch[key] = sub
        elif old.get(key, object()) != value:
            patch[key] = value
    return patch


@attrs.define(kw_only=True)
class Emulator(kmock.KubernetesEmulator):
    def __attrs_post_init__(self) -> None:
        # kmock's own fallbacks (KubernetesEmulator.__attrs_post_init__), the watch stream declared as
        # JSON: kubectl refuses a watch stream of kmock's default type, application/octet-stream.
        kmock.KubernetesScaffold.__attrs_post_init__(self)
        self.fallback[kmock.action.LIST] << self._serve_list
        self.fallback[kmock.action.WATCH] << kmock.headers("Content-Type: application/json") << self._serve_watch
        self.fallback[kmock.action.FETCH] << self._serve_fetch
        self.fallback[kmock.action.CREATE] << self._serve_create
        self.fallback[kmock.action.UPDATE] << self._serve_update
        self.fallback[kmock.action.DELETE] << self._serve_delete

    async def _handle(self, request):
        content_type = request.headers.get("Content-Type", "")
        if request.method.upper() == "PATCH" and content_type.startswith("application/json-patch+json"):
            import jsonpatch

            stored = next((obj for (res, ns, name), obj in self.objects.items()
                           if res == request.resource and ns == request.namespace and name == request.name
                           and not obj.deleted), None)
            if stored is None:
                raise kmock.KubernetesObjectNotFoundError()
            old = json.loads(json.dumps(stored.raw))
            try:
                new = jsonpatch.apply_patch(old, json.loads(request.body))
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                raise kmock.KubernetesError(status=422, reason="Invalid", message=f"json patch: {exc}")
            generation = (old.get("metadata") or {}).get("generation")
            if isinstance(generation, int) and new.get("spec") != old.get("spec"):
                new["metadata"]["generation"] = generation + 1   # as the API server does on a spec change
            # the request as a merge patch (Request is frozen; a copy made with attrs.evolve matches no reaction)
            object.__setattr__(request, "data", _merge_diff(old, new))
        return await super()._handle(request)

    async def _serve_version(self, request):
        doc = await super()._serve_version(request)
        doc["groupVersion"] = doc["groupVersion"].lstrip("/")
        return doc

    async def _serve_list(self, request):
        doc = await super()._serve_list(request)
        res = request.resource
        kind = self.resources[res].kind if res in self.resources else None
        return {"apiVersion": f"{res.group}/{res.version}".lstrip("/"), "kind": f"{kind or 'Object'}List", **doc}


def _openapi_v3(handler: Emulator) -> None:
    """The OpenAPI v3 index kubectl reads to decide that the server validates fields (module docstring)."""
    kinds: dict[tuple[str, str], set[str]] = {}
    for res in handler.resources:
        kind = handler.resources[res].kind
        if kind:
            kinds.setdefault((res.group, res.version), set()).add(kind)
    index = {"paths": {}}
    for (group, version), names in kinds.items():
        prefix = f"api/{version}" if group == "" else f"apis/{group}/{version}"
        index["paths"][prefix] = {"serverRelativeURL": f"/openapi/v3/{prefix}"}
        handler[f"get /openapi/v3/{prefix}"] << {
            "openapi": "3.0.0", "info": {"title": "emulated", "version": version},
            "paths": {f"/{prefix}/{kind}": {"patch": {
                "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": kind},
                "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}],
                "responses": {}}} for kind in sorted(names)}}
    handler["get /openapi/v3"] << index


class KubeAPI:
    """A running emulated API server: ``url``, ``objects`` (what it stores), ``kubeconfig(path)``."""

    def __init__(self, handler: Emulator, url: str, loop: asyncio.AbstractEventLoop):
        self.handler, self.url, self.loop = handler, url, loop

    def stored(self, plural: str, namespace: str | None, name: str) -> dict | None:
        for (res, ns, obj_name), obj in list(self.handler.objects.items()):
            if res.plural == plural and ns == namespace and obj_name == name and not obj.deleted:
                return json.loads(json.dumps(obj.raw))
        return None

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "emulated",
            "clusters": [{"name": "emulated", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "emulated"}}],
            "contexts": [{"name": "emulated", "context": {"cluster": "emulated", "user": "tester"}}]}))
        return path

    def request(self, method: str, path: str, body=None, content_type: str = "application/json") -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"content-type": content_type})
        with urllib.request.urlopen(req, timeout=10) as response:
            return json.loads(response.read() or b"{}")

    def patch_status(self, api_path: str, status: dict) -> dict:
        """Set ``status`` (merged) on the object at ``api_path``, as its controller would."""
        return self.request("PATCH", api_path.rstrip("/") + "/status", {"status": status},
                            "application/merge-patch+json")


@contextmanager
def kube_api(resources: dict[str, dict]) -> Iterator[KubeAPI]:
    """The server for the block. ``resources``: ``"group/version/plural"`` → ResourceInfo fields
    (kind, namespaced, shortnames) of custom resources, beside the built-in ones kmock bundles."""
    ready: dict = {}
    started, stop = threading.Event(), None
    original = parsing.parse_path
    parsing.parse_path = _parse_path(original)

    async def main() -> None:
        nonlocal stop
        stop = asyncio.Event()
        async with Emulator() as handler, kmock.Server(handler) as server:
            handler.resources.load_bundled()
            for key, info in resources.items():
                handler.resources[key] = kmock.ResourceInfo(verbs=VERBS, singular=info["kind"].lower(), **info)
            _openapi_v3(handler)
            ready["api"] = KubeAPI(handler, str(server.url).rstrip("/"), asyncio.get_running_loop())
            started.set()
            await stop.wait()

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:   # reported to the waiting test instead of lost in the thread
            ready["error"] = exc
            started.set()

    thread = threading.Thread(target=run, name="kube-api", daemon=True)
    thread.start()
    try:
        started.wait(30)
        if "api" not in ready:
            raise RuntimeError(f"the emulated API server did not start: {ready.get('error')!r}")
        yield ready["api"]
    finally:
        if stop is not None and "api" in ready:
            ready["api"].loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        parsing.parse_path = original
