"""The RBAC of docs/kubernetes.md: valid manifests, no wildcard, and enough for every API call the
launcher makes in a whole lifecycle (every service type's start, logs, restart, teardown), as the
``fake_apiserver`` recorded them."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import kubernetes_validate
import yaml
from fake_apiserver import FakeApiServer
from k8s_specs import coordinator_spec, participant_spec
from test_k8s_manifests import K8S_VERSION

from airflow_nevermined_fl.gateway.launchers import get_launcher

DOC = Path(__file__).parents[2] / "docs" / "kubernetes.md"
_PATH = re.compile(
    r"^/apis?/(?:(?P<group>[^/]+)/)?v1/(?:namespaces/[^/]+/)?(?P<resource>[a-z]+)(?P<rest>/.*)?$"
)


def granted() -> set[tuple[str, str, str]]:
    """(api group, resource, verb) of the Role and ClusterRole in the docs' RBAC block."""
    text = DOC.read_text()
    block = text[text.index("**RBAC.**") :]
    block = block[block.index("```yaml\n") + 8 : block.index("```\n", block.index("```yaml"))]
    out = set()
    for manifest in yaml.safe_load_all(block):
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
        for rule in manifest["rules"]:
            out |= {(g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    return out


def used(api: FakeApiServer) -> set[tuple[str, str, str]]:
    verbs = {"POST": "create", "PATCH": "patch", "DELETE": "delete"}
    out = set()
    for method, path in api.requests:
        match = _PATH.match(path)
        assert match, path
        group, resource, rest = match["group"] or "", match["resource"], match["rest"] or ""
        if rest.endswith("/log"):
            resource += "/log"
        verb = verbs.get(method) or ("get" if rest else "list")
        out.add((group, resource, verb))
    return out


def test_the_documented_rbac_covers_every_call_and_grants_no_wildcard(
    api: FakeApiServer, conn: Callable[..., str]
) -> None:
    for service_type in ("NodePort", "ClusterIP", "LoadBalancer"):
        launcher = get_launcher("kubernetes", conn(service_type=service_type, advertised_host=None))
        coord = launcher.start(coordinator_spec())
        part = launcher.start(participant_spec("http://10.0.0.6:9000/b/k"))
        launcher.logs(coord), launcher.logs(part), launcher.status(part)
        api.set_pod_exit("fl", part.details["pod"], 1)
        launcher.start(participant_spec("http://10.0.0.6:9000/b/k"))  # restart of an ended pod
        launcher.stop_run(coord.labels.dag_id, coord.labels.run_id)
    rbac, calls = granted(), used(api)
    assert ("networking.k8s.io", "networkpolicies", "create") in calls
    assert calls <= rbac, calls - rbac
    assert not any("*" in part for rule in rbac for part in rule)
