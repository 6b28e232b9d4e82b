"""An in-memory stand-in for the few core/v1 and networking.k8s.io/v1 API calls the Kubernetes launcher
makes, over real HTTP.

Only for exercising the launcher's call sequence (create, label queries, owner references, delete, logs)
with the real ``kubernetes`` client and ``KubernetesHook`` on this machine, where no cluster can run.
It schedules nothing and runs nothing: the real proof is ``test_k8s_cluster.py`` against a cluster.
Every request is recorded, so a test can also prove that *nothing* was sent.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from airflow_nevermined_fl import process

KINDS = {
    "pods": "Pod",
    "services": "Service",
    "configmaps": "ConfigMap",
    "secrets": "Secret",
    "networkpolicies": "NetworkPolicy",
}
NODE = {
    "apiVersion": "v1",
    "kind": "Node",
    "metadata": {"name": "node-1"},
    "status": {
        "addresses": [{"type": "InternalIP", "address": "192.0.2.10"}],
        "conditions": [{"type": "Ready", "status": "True"}],
    },
}
_PATH = re.compile(
    r"^/(?:api/v1/namespaces/([^/]+)/(pods|services|configmaps|secrets)"
    r"|apis/networking\.k8s\.io/v1/namespaces/([^/]+)/(networkpolicies))(?:/([^/]+))?(/log)?$"
)
NOW = "2026-11-27T23:00:00Z"


class FakeApiServer:
    def __init__(self, lb_ingress: bool = True) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}  # (plural, ns, name) -> object
        self.requests: list[tuple[str, str]] = []
        self.logs: dict[str, str] = {}
        self.lb_ingress = lb_ingress
        self.lock = threading.Lock()
        self._node_ports = iter(range(30000, 32768))
        self.port = process.free_port()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> FakeApiServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def kubeconfig(self, path: Path) -> Path:
        server = f"http://127.0.0.1:{self.port}"
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "fake", "cluster": {"server": server}}],
                    "users": [{"name": "fake", "user": {"token": "fake-token"}}],
                    "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                    "current-context": "fake",
                }
            )
        )
        return path

    def of(self, plural: str, ns: str, selector: dict[str, str] | None = None) -> list[dict[str, Any]]:
        with self.lock:
            items = [o for (p, n, _), o in self.objects.items() if p == plural and n == ns]
        labels = selector or {}
        return [o for o in items if labels.items() <= (o["metadata"].get("labels") or {}).items()]

    def set_pod_exit(self, ns: str, name: str, code: int) -> None:
        pod = self.objects[("pods", ns, name)]
        pod["status"] = {
            "phase": "Succeeded" if code == 0 else "Failed",
            "containerStatuses": [
                {
                    **self._container_status(pod),
                    "state": {"terminated": {"exitCode": code, "reason": "Error"}},
                }
            ],
        }

    @staticmethod
    def _container_status(pod: dict[str, Any]) -> dict[str, Any]:
        image = pod["spec"]["containers"][0]["image"]
        return {"name": "base", "image": image, "imageID": "", "ready": True, "restartCount": 0}

    # --- object semantics ----------------------------------------------------------------------------
    def _create(self, plural: str, ns: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        name = body["metadata"]["name"]
        if (plural, ns, name) in self.objects:
            return 409, _status(409, "AlreadyExists", f'{plural} "{name}" already exists')
        body["metadata"].update(uid=str(uuid.uuid4()), creationTimestamp=NOW, resourceVersion="1")
        if plural == "pods":
            body["status"] = {
                "phase": "Running",
                "containerStatuses": [
                    {**self._container_status(body), "state": {"running": {"startedAt": NOW}}}
                ],
            }
            self.logs.setdefault(name, "\n".join(f"{name} line {i}" for i in range(1, 301)))
        if plural == "secrets":
            data = body.pop("stringData", {})
            body["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        if plural == "services":
            body["spec"]["clusterIP"] = "10.96.0.10"
            if body["spec"]["type"] in ("NodePort", "LoadBalancer"):
                for port in body["spec"]["ports"]:
                    port["nodePort"] = next(self._node_ports)
            if body["spec"]["type"] == "LoadBalancer" and self.lb_ingress:
                body["status"] = {"loadBalancer": {"ingress": [{"ip": "198.51.100.10"}]}}
        self.objects[(plural, ns, name)] = body
        return 201, body

    def _delete(self, plural: str, ns: str, name: str) -> tuple[int, dict[str, Any]]:
        obj = self.objects.pop((plural, ns, name), None)
        if obj is None:
            return 404, _status(404, "NotFound", f'{plural} "{name}" not found')
        uid = obj["metadata"]["uid"]  # garbage collection of the dependents, as the cluster's GC does
        for key, dep in list(self.objects.items()):
            if any(ref["uid"] == uid for ref in dep["metadata"].get("ownerReferences") or []):
                self.objects.pop(key)
        return 200, _status(200, "", "deleted")

    def handle(self, method: str, url: str, body: dict[str, Any] | None) -> tuple[int, Any]:
        parsed = urlparse(url)
        with self.lock:
            self.requests.append((method, parsed.path))
            if parsed.path == "/api/v1/nodes":
                return 200, {"apiVersion": "v1", "kind": "NodeList", "metadata": {}, "items": [NODE]}
            match = _PATH.match(parsed.path)
            if not match:
                return 404, _status(404, "NotFound", parsed.path)
            core_ns, core, networking_ns, networking, name, log = match.groups()
            ns, plural = core_ns or networking_ns, core or networking
            if method == "POST" and not name:
                return self._create(plural, ns, body or {})
            if method == "GET" and not name:
                selector = parse_qs(parsed.query).get("labelSelector", [""])[0]
                wanted = dict(p.split("=", 1) for p in selector.split(",") if p)
                items = [
                    o
                    for (p, n, _), o in self.objects.items()
                    if p == plural
                    and n == ns
                    and wanted.items() <= (o["metadata"].get("labels") or {}).items()
                ]
                return 200, {
                    "apiVersion": "v1",
                    "kind": f"{KINDS[plural]}List",
                    "metadata": {},
                    "items": items,
                }
            obj = self.objects.get((plural, ns, name))
            if method == "DELETE":
                return self._delete(plural, ns, name)
            if obj is None:
                return 404, _status(404, "NotFound", f'{plural} "{name}" not found')
            if method == "GET" and log:
                tail = int(parse_qs(parsed.query).get("tailLines", ["100000"])[0])
                return 200, "\n".join(self.logs.get(name, "").splitlines()[-tail:])
            if method == "GET":
                return 200, obj
            if method == "PATCH":
                obj["metadata"].update((body or {}).get("metadata", {}))
                return 200, obj
            return 405, _status(405, "MethodNotAllowed", method)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                code, answer = server.handle(self.command, self.path, body)
                text = answer if isinstance(answer, str) else json.dumps(answer)
                self.send_response(code)
                self.send_header(
                    "Content-Type", "text/plain" if isinstance(answer, str) else "application/json"
                )
                self.send_header("Content-Length", str(len(text.encode())))
                self.end_headers()
                self.wfile.write(text.encode())

            do_GET = do_POST = do_PATCH = do_DELETE = _serve

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Status",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }
