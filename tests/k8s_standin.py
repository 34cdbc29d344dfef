"""A local stand-in for the Kubernetes API server: there is no real API server on this machine.

A threaded ``http.server`` on a free 127.0.0.1 port serving, from an
in-memory dict:

* GET and (strategic merge) PATCH of ``apps/v1`` deployments and statefulsets,
  with ``resourceVersion`` optimistic concurrency (a patch carrying a stale
  ``metadata.resourceVersion`` gets 409 Conflict, as from the real server);
* GET (single and list) of ``autoscaling/v2`` horizontalpodautoscalers;
* the discovery documents ``kubectl`` needs for ``apply --dry-run=client``
  (``/api``, ``/apis``, the group versions above plus ``autoscaling.k8s.io/v1``);
  other objects answer 404 like the real server.

Every request is recorded (method, path, query, content type, JSON body);
``conflict_next_patches(n)`` makes the next ``n`` PATCHes answer 409 (and
bumps the object's resourceVersion, as a concurrent writer would).
``kubeconfig(path)`` writes a kube config pointing at it with no auth.
"""

from __future__ import annotations

import copy
import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

_RESOURCES = {
    ("apps/v1", "deployments"): "Deployment",
    ("apps/v1", "statefulsets"): "StatefulSet",
    ("autoscaling/v2", "horizontalpodautoscalers"): "HorizontalPodAutoscaler",
    ("autoscaling.k8s.io/v1", "verticalpodautoscalers"): "VerticalPodAutoscaler",
}


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str
    content_type: str | None
    body: Any


def strategic_merge(target: Any, patch: Any) -> Any:
    """Strategic merge as the API server does it for the fields used here: maps merge, ``null``
    deletes, lists of objects with a ``name`` merge by name, other lists are replaced."""
    if isinstance(patch, dict) and isinstance(target, dict):
        out = dict(target)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = strategic_merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
        return out
    if (isinstance(patch, list) and isinstance(target, list) and patch
            and all(isinstance(p, dict) and "name" in p for p in patch)):
        out_list = [copy.deepcopy(t) for t in target]
        for item in patch:
            for i, existing in enumerate(out_list):
                if isinstance(existing, dict) and existing.get("name") == item["name"]:
                    out_list[i] = strategic_merge(existing, item)
                    break
            else:
                out_list.append(copy.deepcopy(item))
        return out_list
    return copy.deepcopy(patch)


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


class K8sStandIn:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self.requests: list[Request] = []
        self._conflicts = 0
        self._version = 100
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> K8sStandIn:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- test controls ----------------------------------------------------------
    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)

    def add(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Store an object (apiVersion/kind/metadata.namespace/name), give it a resourceVersion, return a copy."""
        plural = next(p for (gv, p), k in _RESOURCES.items() if k == obj["kind"] and gv == obj["apiVersion"])
        obj = copy.deepcopy(obj)
        with self._lock:
            obj["metadata"]["resourceVersion"] = self._next_version()
            self.objects[(obj["apiVersion"], plural, obj["metadata"]["namespace"], obj["metadata"]["name"])] = obj
        return copy.deepcopy(obj)  # a snapshot: later patches change the stored object, not this one

    def get(self, api_version: str, plural: str, namespace: str, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.objects[(api_version, plural, namespace, name)])

    def conflict_next_patches(self, n: int) -> None:
        with self._lock:
            self._conflicts = n

    def patches(self) -> list[Request]:
        return [r for r in self.requests if r.method == "PATCH"]

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "standin",
            "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
            "users": [{"name": "anonymous", "user": {}}],
            "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "anonymous"}}],
        }))
        return path

    # -- HTTP -----------------------------------------------------------------
    def _discovery(self, path: str) -> dict[str, Any] | None:
        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        if path == "/api/v1":
            return {"kind": "APIResourceList", "groupVersion": "v1", "resources": []}
        groups: dict[str, list[str]] = {}
        for gv, _ in _RESOURCES:
            group, version = gv.split("/")
            groups.setdefault(group, [])
            if version not in groups[group]:
                groups[group].append(version)
        if path == "/apis":
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                 "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]}} for g, vs in groups.items()]}
        gv = path.removeprefix("/apis/")
        if path.startswith("/apis/") and gv.count("/") == 1 and any(g == gv for g, _ in _RESOURCES):
            return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": [
                {"name": p, "singularName": k.lower(), "namespaced": True, "kind": k,
                 "verbs": ["get", "list", "patch", "create", "update", "delete"]}
                for (g, p), k in _RESOURCES.items() if g == gv]}
        return None

    def _route(self, method: str, path: str, body: Any, content_type: str | None) -> tuple[int, dict[str, Any]]:
        doc = self._discovery(path) if method == "GET" else None
        if doc is not None:
            return 200, doc
        parts = path.strip("/").split("/")
        # /apis/<group>/<version>/namespaces/<ns>/<plural>[/<name>]
        if len(parts) not in (6, 7) or parts[0] != "apis" or parts[3] != "namespaces":
            return 404, _status(404, "NotFound", f"the server could not find the requested resource {path}")
        gv, ns, plural = f"{parts[1]}/{parts[2]}", parts[4], parts[5]
        if (gv, plural) not in _RESOURCES:
            return 404, _status(404, "NotFound", f"the server could not find the requested resource {path}")
        with self._lock:
            if len(parts) == 6:
                if method != "GET":
                    return 405, _status(405, "MethodNotAllowed", method)
                items = [copy.deepcopy(o) for (g, p, n, _), o in sorted(self.objects.items())
                         if (g, p, n) == (gv, plural, ns)]
                return 200, {"kind": _RESOURCES[(gv, plural)] + "List", "apiVersion": gv,
                             "metadata": {"resourceVersion": str(self._version)}, "items": items}
            key = (gv, plural, ns, parts[6])
            obj = self.objects.get(key)
            if obj is None:
                return 404, _status(404, "NotFound", f'{plural} "{parts[6]}" not found')
            if method == "GET":
                return 200, copy.deepcopy(obj)
            if method != "PATCH":
                return 405, _status(405, "MethodNotAllowed", method)
            if content_type != "application/strategic-merge-patch+json":
                return 415, _status(415, "UnsupportedMediaType",
                                    f"stand-in serves strategic merge only, got {content_type}")
            if self._conflicts > 0:
                self._conflicts -= 1
                obj["metadata"]["resourceVersion"] = self._next_version()  # a concurrent writer
            wanted = (body.get("metadata") or {}).get("resourceVersion")
            if wanted is not None and wanted != obj["metadata"]["resourceVersion"]:
                return 409, _status(409, "Conflict", f'Operation cannot be fulfilled on {plural} "{parts[6]}": '
                                    "the object has been modified; please apply your changes to the latest version")
            merged = strategic_merge(obj, {k: v for k, v in body.items() if k != "metadata"})
            merged["metadata"]["resourceVersion"] = self._next_version()
            self.objects[key] = merged
            return 200, copy.deepcopy(merged)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                ctype = self.headers.get("Content-Type")
                standin.requests.append(Request(self.command, url.path, url.query, ctype, body))
                code, doc = standin._route(self.command, url.path, body, ctype)
                data = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PATCH = do_POST = do_PUT = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
                pass

        return Handler
