"""A fake Kubeflow Model Registry REST API (v1alpha3) for tests: an in-memory store behind a threaded
``http.server`` on 127.0.0.1.

The real server is a Go service with a database; neither runs here. This fake implements the
endpoints the ``model-registry`` Python client calls for registering, listing, finding and patching
registered models, model versions and model artifacts, with the behaviour the OpenAPI spec
(kubeflow/model-registry ``api/openapi/model-registry.yaml``) describes: server-made ids and
timestamps as strings, 404 with an ``Error`` body for a find that matches nothing, 201 on create,
PATCH replacing the fields it carries (``customProperties`` as a whole map, as the server's
reconciler does), list pages with ``nextPageToken`` ("" after the last page).

Every request body, query parameter and response body is checked, and every failure is recorded in
``violations`` (a test asserts it stays empty):

- against the spec's own schemas (``jsonschema``), when the spec is given: the operation is looked
  up by method and path template; OpenAPI's ``discriminator`` picks the ``oneOf`` branch, as the
  generated clients do; an operation, parameter or status code the spec lacks is a violation too;
- always against the client's generated pydantic models (``mr_openapi.models``: generated from the
  same spec), so that what the client would fail to parse fails here.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlparse

PREFIX = "/api/model_registry/v1"   # what model-registry 0.3.18 calls
SPEC_PATH_IN_REPO = "api/openapi/model-registry.yaml"
SPEC_ENV = "AMOPO_MODEL_REGISTRY_OPENAPI"
# Where `fetch github:kubeflow/model-registry` puts its snapshot (a git directory).
MIRRORS = (Path("/work/.mirror/kubeflow+model-registry/repo"), Path("/work/.mirror/kubeflow+hub/repo"))


def load_spec() -> tuple[dict | None, str]:
    """(the OpenAPI document, where it came from) or (None, why not): ``$AMOPO_MODEL_REGISTRY_OPENAPI``
    (a YAML file), else a fetched snapshot of kubeflow/model-registry. The project keeps no copy."""
    import os

    import yaml

    given = os.environ.get(SPEC_ENV)
    if given:
        path = Path(given)
        if not path.is_file():
            return None, f"${SPEC_ENV}={given} is not a file"
        return yaml.safe_load(path.read_text(encoding="utf-8")), str(path)
    for git_dir in MIRRORS:
        if not git_dir.is_dir():
            continue
        done = subprocess.run(["git", "--git-dir", str(git_dir), "show", f"HEAD:{SPEC_PATH_IN_REPO}"],
                              capture_output=True, text=True, check=False)
        if done.returncode == 0:
            return yaml.safe_load(done.stdout), f"{git_dir}:{SPEC_PATH_IN_REPO}"
    return None, (f"no Model Registry OpenAPI spec: set ${SPEC_ENV} to {SPEC_PATH_IN_REPO} of kubeflow/model-registry, "
                  f"or fetch that repository (looked in {', '.join(map(str, MIRRORS))})")


# --- validation against the spec ------------------------------------------------------------------

def _resolve_discriminators(node: Any) -> Any:
    """OpenAPI's ``oneOf`` + ``discriminator.mapping`` as JSON Schema: the discriminator's value
    selects the branch (with plain ``oneOf``, a body matching two similar branches would fail)."""
    if isinstance(node, list):
        return [_resolve_discriminators(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _resolve_discriminators(v) for k, v in node.items()}
    disc = node.get("discriminator")
    if disc and "oneOf" in node and disc.get("mapping"):
        prop, mapping = disc["propertyName"], disc["mapping"]
        branches = [{"if": {"properties": {prop: {"const": value}}, "required": [prop]}, "then": {"$ref": ref}}
                    for value, ref in mapping.items()]
        node = {k: v for k, v in node.items() if k not in ("oneOf", "discriminator")}
        node["allOf"] = [{"required": [prop], "properties": {prop: {"enum": sorted(mapping)}}}, *branches]
    return node


class SpecChecker:
    """Request and response checks for the operations of an OpenAPI 3.0 document."""

    def __init__(self, spec: dict):
        from jsonschema import Draft7Validator
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT7

        self.spec = _resolve_discriminators(copy.deepcopy(spec))
        self._registry = Registry().with_resource("urn:spec", Resource(contents=self.spec, specification=DRAFT7))
        self._validator_cls = Draft7Validator
        # The spec names its API version in every path (the snapshot's: v1alpha3); the client's
        # requests are matched to the spec's paths with the fake's prefix swapped for the spec's.
        first = next(iter(self.spec["paths"]))
        self.prefix = re.match(r"^/api/model_registry/[^/]+", first).group(0)
        self._templates = []
        for template in self.spec["paths"]:
            pattern = "^" + re.sub(r"\\\{([^/]+?)\\\}", r"(?P<\1>[^/]+)", re.escape(template)) + "$"
            self._templates.append((re.compile(pattern), template))

    def _get(self, ref: str) -> Any:
        node: Any = self.spec
        for part in ref.lstrip("#/").split("/"):
            node = node[part]
        return node

    def _follow(self, node: Any) -> Any:
        while isinstance(node, dict) and "$ref" in node:
            node = self._get(node["$ref"])
        return node

    def errors(self, instance: Any, schema: dict) -> list[str]:
        wrapped = {"$ref": "urn:spec" + schema["$ref"]} if "$ref" in schema else schema
        validator = self._validator_cls(wrapped, registry=self._registry)
        return [f"{'/'.join(map(str, e.absolute_path)) or '(body)'}: {e.message}"
                for e in validator.iter_errors(instance)]

    def operation(self, method: str, path: str) -> tuple[str | None, dict | None]:
        template, op, _ = self._match(method, path)
        return template, op

    def _match(self, method: str, path: str) -> tuple[str | None, dict | None, dict[str, str]]:
        if path.startswith(PREFIX + "/"):
            path = self.prefix + path[len(PREFIX):]
        for pattern, template in self._templates:
            if match := pattern.match(path):
                return template, self.spec["paths"][template].get(method.lower()), match.groupdict()
        return None, None, {}

    def check_request(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> list[str]:
        template, op, in_path = self._match(method, path)
        if op is None:
            return [f"{method} {path}: no such operation in the spec"]
        problems = []
        params = [self._follow(p) for p in [*self.spec["paths"][template].get("parameters", []),
                                            *op.get("parameters", [])]]
        for param in params:
            if param.get("in") == "path" and param["name"] in in_path:
                problems += [f"{method} {template} {{{param['name']}}}={in_path[param['name']]}: {e}"
                             for e in self.errors(in_path[param["name"]], param.get("schema", {}))]
        by_name = {p["name"]: p for p in params if p.get("in") == "query"}
        for name, values in query.items():
            if name not in by_name:
                problems.append(f"{method} {template}: query parameter '{name}' is not in the spec")
                continue
            for value in values:
                problems += [f"{method} {template} ?{name}={value}: {e}"
                             for e in self.errors(value, by_name[name].get("schema", {}))]
        content = ((op.get("requestBody") or {}).get("content") or {}).get("application/json")
        if content is None:
            if body is not None:
                problems.append(f"{method} {template}: the spec has no request body")
        elif body is None:
            problems.append(f"{method} {template}: request body missing")
        else:
            problems += [f"{method} {template} request: {e}" for e in self.errors(body, content["schema"])]
        return problems

    def check_response(self, method: str, path: str, status: int, body: Any) -> list[str]:
        template, op = self.operation(method, path)
        if op is None:
            return []
        response = op.get("responses", {}).get(str(status))
        if response is None:
            return [f"{method} {template}: status {status} is not a response of this operation in the spec"]
        response = self._follow(response)
        content = (response.get("content") or {}).get("application/json")
        if content is None:
            return []
        return [f"{method} {template} response {status}: {e}" for e in self.errors(body, content["schema"])]


# --- the fake -------------------------------------------------------------------------------------

def _now_ms() -> str:
    return str(int(time.time() * 1000))


class NotFound(Exception):
    pass


class Conflict(Exception):
    pass


class BadRequest(Exception):
    pass


class FakeModelRegistry:
    """The fake server. ``url`` is its address; ``token`` (when set) must come as a bearer token;
    ``requests`` lists (method, path, query, body) of every call; ``violations`` every mismatch with
    the spec or the client's models."""

    def __init__(self, spec: dict | None = None, *, token: str | None = None):
        self.checker = SpecChecker(spec) if spec is not None else None
        self.token = token
        self.requests: list[tuple[str, str, dict, Any]] = []
        self.violations: list[str] = []
        self.authorizations: list[str | None] = []
        self._lock = threading.Lock()
        self._ids = {"context": 0, "artifact": 0}
        self.registered_models: dict[str, dict] = {}
        self.model_versions: dict[str, dict] = {}
        self.artifacts: dict[str, dict] = {}
        self.artifact_owner: dict[str, str] = {}   # artifact id → model version id
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle
    def __enter__(self) -> FakeModelRegistry:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _handle(self) -> None:
                fake._serve(self)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="fake-model-registry")
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # HTTP
    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        parsed = urlparse(handler.path)
        query = parse_qs(parsed.query, keep_blank_values=True)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        method = handler.command
        body: Any = None
        status, payload = 500, {"code": "internal", "message": "unhandled"}
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            status, payload = 400, {"code": "bad_request", "message": "body is not JSON"}
        else:
            with self._lock:
                self.requests.append((method, parsed.path, query, body))
                self.authorizations.append(handler.headers.get("Authorization"))
                if self.checker is not None:
                    self.violations += self.checker.check_request(method, parsed.path, query, body)
                if self.token and handler.headers.get("Authorization") != f"Bearer {self.token}":
                    status, payload = 401, {"code": "unauthorized", "message": "missing or wrong bearer token"}
                else:
                    status, payload = self._dispatch(method, parsed.path, query, body)
                if self.checker is not None:
                    self.violations += self.checker.check_response(method, parsed.path, status, payload)
                self.violations += _check_with_client_models(method, parsed.path, status, body, payload)
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _dispatch(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        if not path.startswith(PREFIX):
            return 404, {"code": "not_found", "message": f"{path}: not an API path"}
        route = path[len(PREFIX):]
        q = {k: v[-1] for k, v in query.items()}
        try:
            for (want_method, pattern), handler in ROUTES.items():
                match = re.fullmatch(pattern, route)
                if match and want_method == method:
                    return handler(self, *match.groups(), q=q, body=body)
            return 404, {"code": "not_found", "message": f"{method} {route}: not implemented by the fake"}
        except NotFound as exc:
            return 404, {"code": "not_found", "message": str(exc)}
        except Conflict as exc:
            return 409, {"code": "conflict", "message": str(exc)}
        except BadRequest as exc:
            return 400, {"code": "bad_request", "message": str(exc)}

    # store helpers
    def _new_id(self, kind: str) -> str:
        self._ids[kind] += 1
        return str(self._ids[kind])

    def _stamp(self, entity: dict, kind: str) -> dict:
        now = _now_ms()
        entity.update(id=self._new_id(kind), createTimeSinceEpoch=now, lastUpdateTimeSinceEpoch=now)
        return entity

    def _page(self, items: list[dict], q: dict[str, str]) -> dict:
        order = q.get("orderBy") or "ID"
        key = {"ID": lambda e: int(e["id"]), "CREATE_TIME": lambda e: (int(e["createTimeSinceEpoch"]), int(e["id"])),
               "LAST_UPDATE_TIME": lambda e: (int(e["lastUpdateTimeSinceEpoch"]), int(e["id"])),
               "NAME": lambda e: (e.get("name") or "", int(e["id"]))}.get(order)
        if key is None:
            raise BadRequest(f"orderBy {order!r}: unknown")
        items = sorted(items, key=key, reverse=(q.get("sortOrder") or "ASC") == "DESC")
        size = int(q.get("pageSize") or 100)
        start = int(q.get("nextPageToken") or 0)
        page = items[start:start + size]
        more = start + size < len(items)
        return {"items": copy.deepcopy(page), "nextPageToken": str(start + size) if more else "",
                "pageSize": size, "size": len(page)}

    def _patch(self, entity: dict, body: dict, immutable: tuple[str, ...]) -> dict:
        for key, value in (body or {}).items():
            if key in ("id", "createTimeSinceEpoch", "lastUpdateTimeSinceEpoch") or key in immutable:
                continue
            if value is None:
                continue
            entity[key] = copy.deepcopy(value)
        entity["lastUpdateTimeSinceEpoch"] = _now_ms()
        return copy.deepcopy(entity)

    def _find(self, table: dict[str, dict], what: str, q: dict[str, str], parent_key: str | None = None) -> dict:
        if "name" not in q and "externalId" not in q:
            raise BadRequest("name or externalId is required")
        for entity in table.values():
            if "externalId" in q and entity.get("externalId") != q["externalId"]:
                continue
            if "name" in q and entity.get("name") != q["name"]:
                continue
            if parent_key and q.get("parentResourceId") and entity.get(parent_key) != q["parentResourceId"]:
                continue
            return copy.deepcopy(entity)
        raise NotFound(f"no {what} matches {q}")

    # registered models
    def list_registered_models(self, *, q, body):
        return 200, self._page(list(self.registered_models.values()), q)

    def create_registered_model(self, *, q, body):
        if any(m["name"] == body.get("name") for m in self.registered_models.values()):
            raise Conflict(f"registered model {body.get('name')!r} exists")
        entity = self._stamp({"state": "LIVE", **copy.deepcopy(body)}, "context")
        self.registered_models[entity["id"]] = entity
        return 201, copy.deepcopy(entity)

    def get_registered_model(self, rm_id, *, q, body):
        if rm_id not in self.registered_models:
            raise NotFound(f"no registered model {rm_id}")
        return 200, copy.deepcopy(self.registered_models[rm_id])

    def patch_registered_model(self, rm_id, *, q, body):
        if rm_id not in self.registered_models:
            raise NotFound(f"no registered model {rm_id}")
        return 200, self._patch(self.registered_models[rm_id], body, ("name",))

    def find_registered_model(self, *, q, body):
        return 200, self._find(self.registered_models, "registered model", q)

    def list_versions_of(self, rm_id, *, q, body):
        if rm_id not in self.registered_models:
            raise NotFound(f"no registered model {rm_id}")
        mine = [v for v in self.model_versions.values() if v["registeredModelId"] == rm_id]
        return 200, self._page(mine, q)

    # model versions
    def create_model_version(self, *, q, body):
        rm_id = body.get("registeredModelId")
        if rm_id not in self.registered_models:
            raise NotFound(f"no registered model {rm_id}")
        if any(v["registeredModelId"] == rm_id and v["name"] == body.get("name") for v in self.model_versions.values()):
            raise Conflict(f"version {body.get('name')!r} of registered model {rm_id} exists")
        entity = self._stamp({"state": "LIVE", **copy.deepcopy(body)}, "context")
        self.model_versions[entity["id"]] = entity
        return 201, copy.deepcopy(entity)

    def list_model_versions(self, *, q, body):
        return 200, self._page(list(self.model_versions.values()), q)

    def get_model_version(self, mv_id, *, q, body):
        if mv_id not in self.model_versions:
            raise NotFound(f"no model version {mv_id}")
        return 200, copy.deepcopy(self.model_versions[mv_id])

    def patch_model_version(self, mv_id, *, q, body):
        if mv_id not in self.model_versions:
            raise NotFound(f"no model version {mv_id}")
        return 200, self._patch(self.model_versions[mv_id], body, ("name", "registeredModelId"))

    def find_model_version(self, *, q, body):
        return 200, self._find(self.model_versions, "model version", q, "registeredModelId")

    # artifacts
    def upsert_version_artifact(self, mv_id, *, q, body):
        if mv_id not in self.model_versions:
            raise NotFound(f"no model version {mv_id}")
        if body.get("artifactType") != "model-artifact":
            raise BadRequest(f"the fake keeps model artifacts only, not {body.get('artifactType')!r}")
        if body.get("id"):
            if body["id"] not in self.artifacts:
                raise NotFound(f"no artifact {body['id']}")
            return 200, self._patch(self.artifacts[body["id"]], body, ("name",))
        entity = self._stamp({"state": "UNKNOWN", **copy.deepcopy(body)}, "artifact")
        self.artifacts[entity["id"]] = entity
        self.artifact_owner[entity["id"]] = mv_id
        return 201, copy.deepcopy(entity)

    def list_version_artifacts(self, mv_id, *, q, body):
        if mv_id not in self.model_versions:
            raise NotFound(f"no model version {mv_id}")
        mine = [a for i, a in self.artifacts.items() if self.artifact_owner.get(i) == mv_id]
        return 200, self._page(mine, q)

    def find_model_artifact(self, *, q, body):
        if "name" not in q and "externalId" not in q:
            raise BadRequest("name or externalId is required")
        for art_id, entity in self.artifacts.items():
            if "externalId" in q and entity.get("externalId") != q["externalId"]:
                continue
            if "name" in q and entity.get("name") != q["name"]:
                continue
            if q.get("parentResourceId") and self.artifact_owner.get(art_id) != q["parentResourceId"]:
                continue
            return 200, copy.deepcopy(entity)
        raise NotFound(f"no model artifact matches {q}")

    def list_model_artifacts(self, *, q, body):
        return 200, self._page(list(self.artifacts.values()), q)

    def get_model_artifact(self, art_id, *, q, body):
        if art_id not in self.artifacts:
            raise NotFound(f"no model artifact {art_id}")
        return 200, copy.deepcopy(self.artifacts[art_id])

    def patch_model_artifact(self, art_id, *, q, body):
        if art_id not in self.artifacts:
            raise NotFound(f"no model artifact {art_id}")
        return 200, self._patch(self.artifacts[art_id], body, ("name",))

    # views for tests
    def version(self, model: str, version_name: str) -> dict:
        rm = next(m for m in self.registered_models.values() if m["name"] == model)
        return next(v for v in self.model_versions.values()
                    if v["registeredModelId"] == rm["id"] and v["name"] == version_name)

    def artifacts_of(self, version_id: str) -> list[dict]:
        return [a for i, a in self.artifacts.items() if self.artifact_owner.get(i) == version_id]


_ID = r"([^/]+)"
ROUTES: dict[tuple[str, str], Callable[..., tuple[int, Any]]] = {
    ("GET", "/registered_models"): FakeModelRegistry.list_registered_models,
    ("POST", "/registered_models"): FakeModelRegistry.create_registered_model,
    ("GET", f"/registered_models/{_ID}"): FakeModelRegistry.get_registered_model,
    ("PATCH", f"/registered_models/{_ID}"): FakeModelRegistry.patch_registered_model,
    ("GET", "/registered_model"): FakeModelRegistry.find_registered_model,
    ("GET", f"/registered_models/{_ID}/versions"): FakeModelRegistry.list_versions_of,
    ("GET", "/model_versions"): FakeModelRegistry.list_model_versions,
    ("POST", "/model_versions"): FakeModelRegistry.create_model_version,
    ("GET", f"/model_versions/{_ID}"): FakeModelRegistry.get_model_version,
    ("PATCH", f"/model_versions/{_ID}"): FakeModelRegistry.patch_model_version,
    ("GET", "/model_version"): FakeModelRegistry.find_model_version,
    ("GET", f"/model_versions/{_ID}/artifacts"): FakeModelRegistry.list_version_artifacts,
    ("POST", f"/model_versions/{_ID}/artifacts"): FakeModelRegistry.upsert_version_artifact,
    ("GET", "/model_artifact"): FakeModelRegistry.find_model_artifact,
    ("GET", "/model_artifacts"): FakeModelRegistry.list_model_artifacts,
    ("GET", f"/model_artifacts/{_ID}"): FakeModelRegistry.get_model_artifact,
    ("PATCH", f"/model_artifacts/{_ID}"): FakeModelRegistry.patch_model_artifact,
}


# --- validation against the client's generated models ---------------------------------------------

# (method, route regex) → (request model, response model) in mr_openapi.models
_CLIENT_MODELS: dict[tuple[str, str], tuple[str | None, str]] = {
    ("GET", "/registered_models"): (None, "RegisteredModelList"),
    ("POST", "/registered_models"): ("RegisteredModelCreate", "RegisteredModel"),
    ("GET", f"/registered_models/{_ID}"): (None, "RegisteredModel"),
    ("PATCH", f"/registered_models/{_ID}"): ("RegisteredModelUpdate", "RegisteredModel"),
    ("GET", "/registered_model"): (None, "RegisteredModel"),
    ("GET", f"/registered_models/{_ID}/versions"): (None, "ModelVersionList"),
    ("GET", "/model_versions"): (None, "ModelVersionList"),
    ("POST", "/model_versions"): ("ModelVersionCreate", "ModelVersion"),
    ("GET", f"/model_versions/{_ID}"): (None, "ModelVersion"),
    ("PATCH", f"/model_versions/{_ID}"): ("ModelVersionUpdate", "ModelVersion"),
    ("GET", "/model_version"): (None, "ModelVersion"),
    ("GET", f"/model_versions/{_ID}/artifacts"): (None, "ArtifactList"),
    ("POST", f"/model_versions/{_ID}/artifacts"): ("Artifact", "Artifact"),
    ("GET", "/model_artifact"): (None, "ModelArtifact"),
    ("GET", "/model_artifacts"): (None, "ModelArtifactList"),
    ("GET", f"/model_artifacts/{_ID}"): (None, "ModelArtifact"),
    ("PATCH", f"/model_artifacts/{_ID}"): ("ModelArtifactUpdate", "ModelArtifact"),
}


def _parse(model_name: str, data: Any) -> str | None:
    import mr_openapi.models as models

    model = getattr(models, model_name)
    try:
        parsed = model.from_dict(data) if hasattr(model, "from_dict") else model.model_validate(data)
        if parsed is None:
            return "parsed as nothing"
        if hasattr(parsed, "actual_instance") and parsed.actual_instance is None:
            return "matches none of the oneOf models"
    except Exception as exc:  # pydantic.ValidationError, ValueError of the oneOf wrappers
        return " ".join(str(exc).split())[:400]
    return None


def _check_with_client_models(method: str, path: str, status: int, body: Any, payload: Any) -> list[str]:
    if not path.startswith(PREFIX):
        return [f"{method} {path}: not an API path"]
    route = path[len(PREFIX):]
    for (want_method, pattern), (request_model, response_model) in _CLIENT_MODELS.items():
        if want_method == method and re.fullmatch(pattern, route):
            problems = []
            if request_model and (error := _parse(request_model, body)):
                problems.append(f"{method} {route} request as {request_model}: {error}")
            model = response_model if status < 400 else "Error"
            if error := _parse(model, payload):
                problems.append(f"{method} {route} response {status} as {model}: {error}")
            return problems
    return [f"{method} {route}: no operation the fake knows"]
