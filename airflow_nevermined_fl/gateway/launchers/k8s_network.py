"""The per-workload NetworkPolicy (``networking.k8s.io/v1``) of the Kubernetes backend: its pod's sandbox.

It selects the workload's pod only and denies every connection but what the workload needs:

- ingress: the workload's own ports (the coordinator's gRPC and status ports), none for a participant;
- egress: the coordinator to its session storage (``storage.endpoint`` of its ``session.json``), a
  participant to its coordinator (``--coordinator``) and to the storage of its granted dataset URL; then
  the provider's own ``extra.nvfl.egress`` (CIDR + ports, e.g. the storage of the coordinators its
  participants upload to, which a participant learns only from its coordinator, at run time).

NetworkPolicy names peers by IP block or pod selector only: a cluster service name
(``<name>.<ns>.svc``) becomes a selector of that workload's pods; any other DNS name is resolved when the
workload starts (its addresses, at that moment), or, where it does not resolve from the gateway, only its
port is allowed (to any address). DNS (port 53) is allowed only when a peer is a name.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from airflow_nevermined_fl.gateway.launchers.base import CONFIG_FILE, DATA_URL_FILE, WorkloadSpec
from airflow_nevermined_fl.gateway.launchers.k8s_config import ProviderConfig
from airflow_nevermined_fl.gateway.launchers.k8s_manifests import L_MANAGED, L_WORKLOAD, MANAGED_BY, metadata

Resolver = Callable[[str], list[str]]
Peer = tuple[str, int]  # host (name or IP literal), port

_SERVICE = re.compile(r"^([a-z0-9-]+)\.([a-z0-9-]+)\.svc(\.cluster\.local)?$")
_DEFAULT_PORTS = {"http": 80, "https": 443}
DNS = [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
ANYWHERE = [{"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "::/0"}}]


def resolve(host: str) -> list[str]:
    """The addresses ``host`` resolves to from the gateway (empty when it does not resolve)."""
    try:
        return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)})
    except OSError:
        return []


def _url_peer(url: str) -> Peer | None:
    parts = urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None  # e.g. s3://bucket/key: its endpoint is not in it (the provider's egress covers it)
    return parts.hostname, parts.port or _DEFAULT_PORTS[parts.scheme]


def _address_peer(address: str) -> Peer:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def peers(spec: WorkloadSpec) -> list[Peer]:
    """Where the workload connects to, as its spec says: the coordinator its storage endpoint; a participant
    its coordinator and its dataset's storage (a granted ``http(s)`` URL)."""
    found: list[Peer | None] = []
    if spec.labels.role == "coordinator":
        storage = json.loads(spec.files.get(CONFIG_FILE, "{}")).get("storage") or {}
        found.append(_url_peer(storage.get("endpoint") or ""))
    else:
        if "--coordinator" in spec.args:
            found.append(_address_peer(spec.args[spec.args.index("--coordinator") + 1]))
        found.append(_url_peer(spec.secret_files.get(DATA_URL_FILE, "")))
    return list(dict.fromkeys(p for p in found if p))


def _ip(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def _block(ip: str) -> dict[str, Any]:
    return {"ipBlock": {"cidr": f"{ip}/{32 if ipaddress.ip_address(ip).version == 4 else 128}"}}


def _egress_rule(host: str, port: int, resolver: Resolver) -> tuple[dict[str, Any], bool]:
    """The egress rule reaching ``host:port`` and whether the pod must resolve a name for it."""
    ports = [{"protocol": "TCP", "port": port}]
    if ip := _ip(host):
        return {"to": [_block(ip)], "ports": ports}, False
    if service := _SERVICE.match(host):
        name, namespace = service.group(1), service.group(2)
        to = {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "podSelector": {"matchLabels": {L_MANAGED: MANAGED_BY, L_WORKLOAD: name}},
        }
        return {"to": [to], "ports": ports}, True
    addresses = resolver(host)
    return {"to": [_block(a) for a in addresses] or ANYWHERE, "ports": ports}, True


def egress(spec: WorkloadSpec, config: ProviderConfig, resolver: Resolver = resolve) -> list[dict[str, Any]]:
    """The egress rules of the workload's pod (see the module's docstring)."""
    rules: list[dict[str, Any]] = []
    names = False
    for host, port in peers(spec):
        rule, name = _egress_rule(host, port, resolver)
        rules.append(rule)
        names = names or name
    rules += [
        {
            "to": [{"ipBlock": {"cidr": e["cidr"]}}],
            "ports": [{"protocol": "TCP", "port": p} for p in e["ports"]],
        }
        for e in config.egress
    ]
    return [*rules, {"ports": DNS}] if names else rules


def ingress(ports: Iterable[int]) -> list[dict[str, Any]]:
    """The ingress rules: the workload's own ports, from anywhere (participants may be in other clusters)."""
    allowed = [{"protocol": "TCP", "port": p} for p in ports]
    return [{"ports": allowed}] if allowed else []


def network_policy(
    spec: WorkloadSpec, config: ProviderConfig, resolver: Resolver = resolve
) -> dict[str, Any]:
    """The workload's NetworkPolicy: labelled like its other objects, selecting its pod only, default deny
    in both directions but for :func:`ingress` and :func:`egress`."""
    meta = metadata(spec.labels, config.namespace)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta,
        "spec": {
            "podSelector": {"matchLabels": {L_MANAGED: MANAGED_BY, L_WORKLOAD: meta["name"]}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress(spec.ports.values()),
            "egress": egress(spec, config, resolver),
        },
    }
