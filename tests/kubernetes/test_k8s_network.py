"""The per-workload NetworkPolicy: validated against the Kubernetes OpenAPI schema, selecting its pod only,
letting through what the workload needs and nothing else (read with ``netpol``, the API's semantics); the
launcher creates it before the pod, owned by the pod, and tears it down with it (``fake_apiserver``).

The attack: the code in a participant's pod (or a coordinator's) sends the provider's data, or the session's
updates, anywhere but to its coordinator and storage (e.g. an image the consumer got allowed, a model that
prints its rows to a socket). Nothing stops it without a policy: a pod may reach any address by default."""

from __future__ import annotations

import json
from collections.abc import Callable

from fake_apiserver import FakeApiServer
from k8s_specs import STORAGE, coordinator_spec, labels, participant_spec
from netpol import Pod, allowed, outside
from test_k8s_manifests import config, validate

from airflow_nevermined_fl.gateway.launchers import get_launcher
from airflow_nevermined_fl.gateway.launchers import k8s_manifests as m
from airflow_nevermined_fl.gateway.launchers import k8s_network as net
from airflow_nevermined_fl.gateway.launchers.base import DATA_URL_FILE

NS = "fl"
EXFIL = "203.0.113.66"  # anyone's server
DATA_URL = "http://10.0.0.6:9000/nvfl/provider-1.npz?X-Amz-Signature=abc"


def no_dns(host: str) -> list[str]:
    raise AssertionError(f"{host} resolved: no name to resolve here")


def coordinator_pod() -> Pod:
    return Pod.of(m.pod(coordinator_spec(), config()), ip="10.244.0.10")


def participant(coordinator: str) -> dict:
    spec = participant_spec(DATA_URL)
    spec.args[spec.args.index("--coordinator") + 1] = coordinator
    return {"spec": spec, "pod": Pod.of(m.pod(spec, config()), ip="10.244.0.20")}


def test_policies_validate_and_select_their_pod_only() -> None:
    coordinator_name = m.object_name(coordinator_spec().labels)
    for spec in (coordinator_spec(), participant(f"{coordinator_name}.fl.svc:50051")["spec"]):
        policy = net.network_policy(spec, config(), no_dns)
        validate(policy)
        pod = m.pod(spec, config())
        assert policy["metadata"]["labels"] == pod["metadata"]["labels"]  # found and torn down with it
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]  # default deny both ways
        other = Pod.of(m.pod(participant_spec(labels=labels(name="provider-2")), config()))
        assert m.L_WORKLOAD in policy["spec"]["podSelector"]["matchLabels"]
        selector = policy["spec"]["podSelector"]["matchLabels"]
        assert selector.items() <= pod["metadata"]["labels"].items()
        assert not selector.items() <= other.labels.items()


def test_the_coordinator_reaches_its_storage_and_serves_its_ports_only() -> None:
    policies, coordinator = [net.network_policy(coordinator_spec(), config(), no_dns)], coordinator_pod()
    storage = outside("10.0.0.5")
    assert STORAGE["endpoint"] == "http://10.0.0.5:8333"
    assert allowed(policies, coordinator, storage, 8333)
    assert not allowed(policies, coordinator, storage, 22)
    assert not allowed(policies, coordinator, outside(EXFIL), 443)
    assert not allowed(policies, coordinator, outside("10.96.0.10"), 53, "UDP")  # no name: no DNS
    for port in (50051, 50052):  # gRPC, status: from participants anywhere, and the gateway
        assert allowed(policies, outside(EXFIL), coordinator, port)
    assert not allowed(policies, outside("10.0.0.7"), coordinator, 22)


def test_a_participant_cannot_send_its_data_anywhere_but_its_coordinator_and_storage() -> None:
    """The attack, in the coordinator's cluster: the participant reaches its coordinator's pod (through
    its service name), its dataset's storage, the provider's listed egress; nothing else."""
    coordinator = coordinator_pod()
    name = coordinator.labels[m.L_WORKLOAD]
    p = participant(f"{name}.fl.svc:50051")
    cfg = config(egress=[{"cidr": "198.51.100.0/24", "ports": [443]}])
    policies = [
        net.network_policy(coordinator_spec(), cfg, no_dns),
        net.network_policy(p["spec"], cfg, no_dns),
    ]
    part = p["pod"]
    assert allowed([], part, outside(EXFIL), 443)  # control: without a policy, a pod reaches anyone
    assert allowed(policies, part, coordinator, 50051)
    assert allowed(policies, part, outside("10.0.0.6"), 9000)  # its dataset's S3
    assert allowed(policies, part, outside("198.51.100.7"), 443)  # the provider's egress (uploads)
    assert allowed(policies, part, outside("10.96.0.10"), 53, "UDP")  # a service name: DNS
    assert not allowed(policies, part, outside(EXFIL), 443)
    assert not allowed(policies, part, outside("10.0.0.6"), 22)
    assert not allowed(policies, part, coordinator, 22)
    impostor = Pod.of(m.pod(coordinator_spec(labels=labels("coordinator", "other")), cfg), ip="10.244.0.30")
    assert not allowed(policies, part, impostor, 50051)  # another session's coordinator pod
    assert not allowed(policies, outside("10.0.0.7"), part, 50051)  # no ingress at all
    assert not allowed(policies, coordinator, part, 8080)


def test_a_name_is_resolved_at_launch_else_only_its_port_is_allowed() -> None:
    spec = participant("coord.provider.example:30001")["spec"]
    spec.secret_files[DATA_URL_FILE] = "https://s3.provider.example/b/k?sig=1"
    addresses = {"coord.provider.example": ["192.0.2.44", "2001:db8::44"]}
    policy = net.network_policy(spec, config(), lambda host: addresses.get(host, []))
    validate(policy)
    part = Pod.of(m.pod(spec, config()))
    assert allowed([policy], part, outside("192.0.2.44"), 30001)
    assert allowed([policy], part, outside("2001:db8::44"), 30001)
    assert not allowed([policy], part, outside("192.0.2.45"), 30001)
    # s3.provider.example did not resolve from the gateway: its port (https) to any address
    assert allowed([policy], part, outside("192.0.2.99"), 443)
    assert not allowed([policy], part, outside("192.0.2.99"), 80)
    assert allowed([policy], part, outside("10.96.0.10"), 53, "TCP")


def test_the_launcher_confines_each_pod_before_it_runs_and_removes_the_policy_with_it(
    api: FakeApiServer, conn: Callable[..., str]
) -> None:
    launcher = get_launcher("kubernetes", conn(service_type="ClusterIP"))
    coord = launcher.start(coordinator_spec())
    spec = participant_spec(DATA_URL)
    spec.args[spec.args.index("--coordinator") + 1] = coord.endpoints["grpc"]  # <pod>.fl.svc:50051
    part = launcher.start(spec)
    posts = [path.rsplit("/", 1)[1] for method, path in api.requests if method == "POST"]
    assert posts.index("networkpolicies") < posts.index("pods")  # the pod never runs unconfined
    policies = api.of("networkpolicies", NS)
    assert sorted(p["metadata"]["name"] for p in policies) == sorted(
        [coord.details["pod"], part.details["pod"]]
    )
    for policy in policies:
        owner = policy["metadata"]["ownerReferences"][0]
        assert owner["uid"] == api.objects[("pods", NS, policy["metadata"]["name"])]["metadata"]["uid"]
    pods = {w.labels.role: Pod.of(api.objects[("pods", NS, w.details["pod"])]) for w in (coord, part)}
    assert allowed(policies, pods["participant"], pods["coordinator"], 50051)
    assert not allowed(policies, pods["participant"], outside(EXFIL), 443)
    assert "X-Amz-Signature" not in json.dumps(policies)  # the granted URL's host and port only
    assert launcher.labelled(m.run_selector(coord.labels.dag_id, coord.labels.run_id))["network_policy"]
    launcher.stop_run(coord.labels.dag_id, coord.labels.run_id)
    assert (
        api.of("networkpolicies", NS) == []
        and launcher.run_objects(coord.labels.dag_id, coord.labels.run_id) == {}
    )
