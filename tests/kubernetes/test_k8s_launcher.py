"""The launcher's API call sequence (real ``kubernetes`` client and ``KubernetesHook``, over HTTP) against
the in-memory API of ``fake_apiserver``: idempotent start, owner references, label queries, restart of
an ended pod, log tails kept across deletion, teardown leaving nothing of the run (and nothing of
another run touched). Scheduling and running pods is proved only by ``test_k8s_cluster.py``."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from fake_apiserver import FakeApiServer
from k8s_specs import SECRET, coordinator_spec, labels, participant_spec

from airflow_nevermined_fl.gateway.launchers import Workload, get_launcher
from airflow_nevermined_fl.gateway.launchers import k8s_manifests as m

NS = "fl"


def run_objects(api: FakeApiServer, dag_id: str, run_id: str) -> dict[str, list[str]]:
    selector = dict(p.split("=") for p in m.run_selector(dag_id, run_id).split(","))
    kinds = ("pods", "services", "configmaps", "secrets", "networkpolicies")
    return {
        k: [o["metadata"]["name"] for o in api.of(k, NS, selector)] for k in kinds if api.of(k, NS, selector)
    }


def test_session_lifecycle(api: FakeApiServer, conn: Callable[..., str]) -> None:
    launcher = get_launcher("kubernetes", conn(advertised_host=None))  # NodePort: host from the nodes
    assert launcher.bind_host == "0.0.0.0"
    grpc, status = launcher.free_port(), launcher.free_port()
    assert grpc != status
    coord = launcher.start(coordinator_spec(ports={"grpc": grpc, "status": status}))
    name = coord.details["pod"]
    svc = api.objects[("services", NS, name)]
    node_ports = {p["name"]: p["nodePort"] for p in svc["spec"]["ports"]}
    assert coord.endpoints == {k: f"192.0.2.10:{v}" for k, v in node_ports.items()}
    assert coord.host == "192.0.2.10" and coord.id == f"{NS}/{name}"
    # the secret travels in a Secret only; ConfigMap, Secret and Service are owned by the pod
    pod_uid = api.objects[("pods", NS, name)]["metadata"]["uid"]
    for plural in ("services", "configmaps", "secrets"):
        assert api.objects[(plural, NS, name)]["metadata"]["ownerReferences"][0]["uid"] == pod_uid
    stored = api.objects[("secrets", NS, name)]["data"]["AWS_SECRET_ACCESS_KEY"]
    assert base64.b64decode(stored).decode() == SECRET
    assert SECRET not in json.dumps(api.objects[("pods", NS, name)]) and SECRET not in json.dumps(
        coord.to_dict()
    )
    assert Workload.from_dict(json.loads(json.dumps(coord.to_dict()))) == coord

    # idempotent: a second start of the same labels creates nothing
    posts = sum(1 for r in api.requests if r[0] == "POST")
    assert launcher.start(coordinator_spec(ports={"grpc": grpc, "status": status})).id == coord.id
    assert sum(1 for r in api.requests if r[0] == "POST") == posts

    part = launcher.start(participant_spec("s3://nvfl/provider-1.npz"))
    assert part.endpoints == {} and ("services", NS, part.details["pod"]) not in api.objects
    assert launcher.status(part).running

    # an ended pod reports its exit code; starting it again replaces it
    api.set_pod_exit(NS, part.details["pod"], 3)
    assert (launcher.status(part).running, launcher.status(part).exit_code) == (False, 3)
    old_uid = api.objects[("pods", NS, part.details["pod"])]["metadata"]["uid"]
    again = launcher.start(participant_spec("s3://nvfl/provider-1.npz"))
    assert launcher.status(again).running
    assert api.objects[("pods", NS, part.details["pod"])]["metadata"]["uid"] != old_uid

    assert launcher.logs(coord, tail=5).splitlines() == [f"{name} line {i}" for i in range(296, 301)]

    # another run of the same DAG in the same namespace
    other_run = "manual__2026-11-28T01:00:00+00:00"
    other = launcher.start(participant_spec("s3://nvfl/p.npz", labels=labels(run_id=other_run)))

    spec = coordinator_spec()
    dag_id, run_id = spec.labels.dag_id, spec.labels.run_id
    found = launcher.find(dag_id, run_id)
    assert sorted(w.labels.role for w in found) == ["coordinator", "participant"]
    assert all(w.labels.run_id == run_id for w in found)

    # a start that died half-way (secret created, no pod) is still cleaned up by the teardown
    orphan = m.secret(participant_spec(labels=labels(name="provider-2")), launcher.config)
    launcher.api.create_namespaced_secret(NS, orphan)
    assert "secrets" in run_objects(api, dag_id, run_id)

    stopped = launcher.stop_run(dag_id, run_id)
    assert sorted(w.id for w in stopped) == sorted([coord.id, part.id])
    assert run_objects(api, dag_id, run_id) == {}
    assert launcher.run_objects(dag_id, run_id) == {}  # the same, seen through the client
    # status and log tail stay readable for the teardown's task log after deletion
    assert launcher.status(coord).running is False
    assert launcher.logs(coord, tail=2).splitlines() == [f"{name} line 299", f"{name} line 300"]
    assert launcher.status(again).exit_code is None  # was running when deleted
    # the other run is untouched
    assert launcher.status(other).running
    pod = other.details["pod"]  # a participant: its certificate (configmap), secret env and seat file
    assert run_objects(api, "fl_session", other_run) == {
        "pods": [pod],
        "configmaps": [pod],
        "secrets": [pod, f"{pod}-files"],
        "networkpolicies": [pod],
    }
    launcher.stop_run("fl_session", other_run)
    assert run_objects(api, "fl_session", other_run) == {}


def test_teardown_from_another_launcher_instance(api: FakeApiServer, conn: Callable[..., str]) -> None:
    """A teardown task (another process) finds and stops by labels alone."""
    conn_id = conn(service_type="ClusterIP")
    coord = get_launcher("kubernetes", conn_id).start(coordinator_spec())
    assert coord.endpoints["grpc"] == f"{coord.details['pod']}.{NS}.svc:50051"
    spec = coordinator_spec()
    teardown = get_launcher("kubernetes", conn_id)
    assert [w.id for w in teardown.stop_run(spec.labels.dag_id, spec.labels.run_id)] == [coord.id]
    assert run_objects(api, spec.labels.dag_id, spec.labels.run_id) == {}
    assert "line 300" in teardown.logs(coord, tail=1)


def test_load_balancer_address(api: FakeApiServer, conn: Callable[..., str]) -> None:
    coord = get_launcher("kubernetes", conn(service_type="LoadBalancer")).start(coordinator_spec())
    assert coord.endpoints == {"grpc": "198.51.100.10:50051", "status": "198.51.100.10:50052"}


def test_load_balancer_without_ingress_times_out_and_cleans_up(
    tmp_path: Path, k8s_conn: Callable[..., str]
) -> None:
    with FakeApiServer(lb_ingress=False) as api:
        kubeconfig = str(api.kubeconfig(tmp_path / "kubeconfig-nolb.json"))
        conn_id = k8s_conn(
            "nvfl_k8s_nolb",
            kube_config_path=kubeconfig,
            namespace=NS,
            nvfl={"service_type": "LoadBalancer", "load_balancer_timeout": 1},
        )
        spec = coordinator_spec()
        with pytest.raises(
            TimeoutError, match=r"no address within 1s \(extra\.nvfl\.load_balancer_timeout\)"
        ):
            get_launcher("kubernetes", conn_id).start(spec)
        assert run_objects(api, spec.labels.dag_id, spec.labels.run_id) == {}


def test_two_clusters_one_connection_each(tmp_path: Path, k8s_conn: Callable[..., str]) -> None:
    """Coordinator in the compute provider's cluster, a participant in a data provider's: each launcher
    talks only to its own cluster, and each cluster's teardown cleans only its own objects."""
    with FakeApiServer() as compute, FakeApiServer() as data:
        compute_conn = k8s_conn(
            "nvfl_k8s_compute",
            kube_config_path=str(compute.kubeconfig(tmp_path / "compute.json")),
            namespace="fl-compute",
            nvfl={"service_type": "LoadBalancer"},
        )
        data_conn = k8s_conn(
            "nvfl_k8s_data",
            kube_config_path=str(data.kubeconfig(tmp_path / "data.json")),
            namespace="fl-data",
            nvfl={"dataset_volume": {"pvc": "shards", "mount_path": "/data"}},
        )
        coordinator_side, data_side = (
            get_launcher("kubernetes", compute_conn),
            get_launcher("kubernetes", data_conn),
        )
        coord = coordinator_side.start(coordinator_spec())
        spec = participant_spec("/data/provider-1.npz")
        spec.args[spec.args.index("--coordinator") + 1] = coord.endpoints["grpc"]
        part = data_side.start(spec)
        assert {k[0] for k in compute.objects} == {
            "pods",
            "services",
            "configmaps",
            "secrets",
            "networkpolicies",
        }
        kinds = {k[:2] for k in data.objects}
        assert kinds == {(k, "fl-data") for k in ("pods", "configmaps", "secrets", "networkpolicies")}
        pod = data.objects[("pods", "fl-data", part.details["pod"])]
        assert pod["spec"]["containers"][0]["args"][1] == "198.51.100.10:50051"  # the published LB address
        claim = {"name": "dataset", "persistentVolumeClaim": {"claimName": "shards", "readOnly": True}}
        assert claim in pod["spec"]["volumes"]
        dag_id, run_id = coord.labels.dag_id, coord.labels.run_id
        assert [w.id for w in data_side.stop_run(dag_id, run_id)] == [part.id]
        assert not data.objects and compute.objects
        assert [w.id for w in coordinator_side.stop_run(dag_id, run_id)] == [coord.id]
        assert not compute.objects


def test_secret_files_secret_is_owned_and_torn_down(api: FakeApiServer, conn: Callable[..., str]) -> None:
    launcher = get_launcher("kubernetes", conn())
    coord = launcher.start(coordinator_spec(secret_files={"token": SECRET}))
    name, files = coord.details["pod"], m.secret_files_name(coord.labels)
    pod_uid = api.objects[("pods", NS, name)]["metadata"]["uid"]
    stored = api.objects[("secrets", NS, files)]
    assert stored["metadata"]["ownerReferences"][0]["uid"] == pod_uid
    assert base64.b64decode(stored["data"]["token"]).decode() == SECRET
    assert "token" not in api.objects[("secrets", NS, name)]["data"]
    assert SECRET not in json.dumps(api.objects[("pods", NS, name)])
    launcher.stop_run(coord.labels.dag_id, coord.labels.run_id)
    assert run_objects(api, coord.labels.dag_id, coord.labels.run_id) == {}
