"""NetworkPolicy semantics (networking.k8s.io/v1), as a CNI that enforces them applies them, for the
subset the backend writes (matchLabels, ipBlock without ``except``, numbered ports): which connections
the policies in a namespace let through. No cluster runs here; this reads the manifests the way the
API documents them, so that a test can say "this pod cannot reach that address"."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

NS_LABEL = "kubernetes.io/metadata.name"


@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: dict[str, str] = field(default_factory=dict)
    ip: str = "10.244.0.99"

    @classmethod
    def of(cls, manifest: dict[str, Any], ip: str = "10.244.0.99") -> Pod:
        meta = manifest["metadata"]
        return cls(meta["namespace"], dict(meta.get("labels") or {}), ip)


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return (selector.get("matchLabels") or {}).items() <= labels.items()


def _selects(policy: dict[str, Any], pod: Pod, direction: str) -> bool:
    return (
        policy["metadata"]["namespace"] == pod.namespace
        and direction in policy["spec"].get("policyTypes", ["Ingress"])
        and _matches(policy["spec"]["podSelector"], pod.labels)
    )


def _peer(peer: dict[str, Any], other: Pod, policy_ns: str) -> bool:
    if "ipBlock" in peer:
        return ipaddress.ip_address(other.ip) in ipaddress.ip_network(peer["ipBlock"]["cidr"])
    namespace_ok = (
        _matches(peer["namespaceSelector"], {NS_LABEL: other.namespace})
        if "namespaceSelector" in peer
        else other.namespace == policy_ns
    )
    return namespace_ok and _matches(peer.get("podSelector") or {}, other.labels)


def _rule(rule: dict[str, Any], key: str, other: Pod, port: int, protocol: str, policy_ns: str) -> bool:
    peers_ok = key not in rule or any(_peer(p, other, policy_ns) for p in rule[key])
    ports_ok = "ports" not in rule or any(
        p.get("protocol", "TCP") == protocol and p.get("port") in (None, port) for p in rule["ports"]
    )
    return peers_ok and ports_ok


def allowed(policies: list[dict[str, Any]], source: Pod, dest: Pod, port: int, protocol: str = "TCP") -> bool:
    """Whether a connection from ``source`` to ``dest:port`` passes both ends' policies."""

    def side(pod: Pod, direction: str, key: str, other: Pod) -> bool:
        selecting = [p for p in policies if _selects(p, pod, direction)]
        rules = [
            (r, p["metadata"]["namespace"]) for p in selecting for r in p["spec"].get(direction.lower(), [])
        ]
        return not selecting or any(_rule(r, key, other, port, protocol, ns) for r, ns in rules)

    return side(source, "Egress", "to", dest) and side(dest, "Ingress", "from", source)


def outside(ip: str) -> Pod:
    """An address outside the cluster (no policy selects it)."""
    return Pod("(outside)", {}, ip)
