"""Provider configuration of the Kubernetes backend, validated before anything is created.

Each provider's cluster is one Airflow ``kubernetes`` connection (the cncf-kubernetes provider's type:
``kube_config_path`` / ``kube_config`` / ``in_cluster``, ``cluster_context``, ``namespace``). This backend
reads its own settings from the connection's extra under the key ``nvfl`` (a JSON object)::

    {"namespace": "fl", "nvfl": {
        "service_type": "NodePort", "advertised_host": "203.0.113.7",
        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
        "node_selector": {"nvfl/data": "true"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "fl", "effect": "NoSchedule"}],
        "service_account": "fl-runner", "image_pull_secrets": ["regcred"],
        "image_pull_policy": "IfNotPresent",
        "dataset_volume": {"host_path": "/srv/fl-data"},
        "active_deadline_seconds": 86400, "load_balancer_timeout": 300, "grace_period_seconds": 5,
        "request_timeout": 60, "egress": [{"cidr": "198.51.100.0/24", "ports": [443]}]}}

``request_timeout`` bounds each call to the cluster's API server (seconds, the client's ``_request_timeout``).
``egress``: what every workload pod may reach besides what its spec needs (see :mod:`.k8s_network`).
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any

import jsonschema

SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")

DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS_SUBDOMAIN = rf"{DNS_LABEL}(\.{DNS_LABEL})*"
_LABEL_NAME = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
LABEL_KEY = rf"^({DNS_SUBDOMAIN}/)?{_LABEL_NAME}$"
LABEL_VALUE = rf"^({_LABEL_NAME})?$"
_RESOURCE_NAME = rf"^({DNS_SUBDOMAIN}/)?{DNS_LABEL}$"

_QUANTITIES = {
    "type": "object",
    "propertyNames": {"pattern": _RESOURCE_NAME},
    "additionalProperties": {"type": ["string", "number"]},
}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "service_type": {"enum": list(SERVICE_TYPES)},
        "advertised_host": {"type": "string", "pattern": r"^[A-Za-z0-9]([-A-Za-z0-9.:]*[A-Za-z0-9])?$"},
        "resources": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"requests": _QUANTITIES, "limits": _QUANTITIES},
        },
        "node_selector": {
            "type": "object",
            "propertyNames": {"pattern": LABEL_KEY, "maxLength": 316},
            "additionalProperties": {"type": "string", "pattern": LABEL_VALUE, "maxLength": 63},
        },
        "tolerations": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "key": {"type": "string", "pattern": LABEL_KEY},
                    "operator": {"enum": ["Exists", "Equal"]},
                    "value": {"type": "string", "pattern": LABEL_VALUE, "maxLength": 63},
                    "effect": {"enum": list(TAINT_EFFECTS)},
                    "toleration_seconds": {"type": "integer", "minimum": 0},
                },
            },
        },
        "service_account": {"type": "string", "pattern": f"^{DNS_SUBDOMAIN}$", "maxLength": 253},
        "image_pull_secrets": {
            "type": "array",
            "items": {"type": "string", "pattern": f"^{DNS_SUBDOMAIN}$", "maxLength": 253},
        },
        "image_pull_policy": {"enum": list(PULL_POLICIES)},
        "dataset_volume": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "host_path": {"type": "string", "pattern": "^/"},
                "pvc": {"type": "string", "pattern": f"^{DNS_SUBDOMAIN}$", "maxLength": 253},
                "mount_path": {"type": "string", "pattern": "^/"},
            },
        },
        "active_deadline_seconds": {"type": "integer", "minimum": 1},
        "load_balancer_timeout": {"type": "number", "minimum": 1},
        "grace_period_seconds": {"type": "integer", "minimum": 0},
        "request_timeout": {"type": "number", "exclusiveMinimum": 0},
        "egress": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["cidr", "ports"],
                "properties": {
                    "cidr": {"type": "string"},
                    "ports": {
                        "type": "array",
                        "minItems": 1,
                        "items": {"type": "integer", "minimum": 1, "maximum": 65535},
                    },
                },
            },
        },
    },
}


class KubernetesConfigError(ValueError):
    """Bad Kubernetes backend configuration; the message names the connection and the field."""


@dataclass(frozen=True)
class ProviderConfig:
    """What one provider's cluster connection says about the pods and services started there."""

    conn_id: str
    namespace: str = "default"
    service_type: str = "ClusterIP"
    advertised_host: str | None = None
    resources: dict[str, dict[str, str]] = field(default_factory=dict)
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    service_account: str | None = None
    image_pull_secrets: list[str] = field(default_factory=list)
    image_pull_policy: str | None = None
    dataset_volume: dict[str, str] = field(default_factory=dict)
    active_deadline_seconds: int = 86400
    load_balancer_timeout: float = 300.0
    grace_period_seconds: int = 5
    request_timeout: float = 60.0
    egress: list[dict[str, Any]] = field(default_factory=list)

    @property
    def dataset_mount_path(self) -> str | None:
        volume = self.dataset_volume
        return volume.get("mount_path") or volume.get("host_path") if volume else None


def _field(path: Any) -> str:
    out = "extra.nvfl"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _quantity(value: Any) -> float:
    from kubernetes.utils.quantity import parse_quantity

    return float(parse_quantity(value))


def _check_resources(resources: dict[str, dict[str, Any]]) -> dict[str, dict[str, str]]:
    parsed: dict[str, dict[str, float]] = {}
    for kind, values in resources.items():
        for name, value in values.items():
            where = f"{_field(['resources', kind, name])}"
            try:
                amount = _quantity(value)
            except (ValueError, ArithmeticError):
                raise KubernetesConfigError(
                    f"{where}: {value!r} is not a Kubernetes quantity (e.g. '500m', '1Gi', 2)"
                ) from None
            if amount < 0:
                raise KubernetesConfigError(f"{where}: {value!r} is negative; expected a quantity >= 0")
            parsed.setdefault(kind, {})[name] = amount
    for name, request in parsed.get("requests", {}).items():
        limit = parsed.get("limits", {}).get(name)
        if limit is not None and request > limit:
            raise KubernetesConfigError(
                f"{_field(['resources', 'requests', name])}: request {resources['requests'][name]!r} exceeds "
                f"the limit {resources['limits'][name]!r}"
            )
    return {kind: {n: str(v) for n, v in values.items()} for kind, values in resources.items()}


def _check_toleration(i: int, tol: dict[str, Any]) -> dict[str, Any]:
    where = _field(["tolerations", i])
    operator = tol.get("operator", "Equal")
    if operator == "Exists" and tol.get("value"):
        raise KubernetesConfigError(f"{where}.value: must be empty with operator 'Exists'")
    if not tol.get("key") and operator != "Exists":
        raise KubernetesConfigError(f"{where}.operator: must be 'Exists' when no key is given")
    if "toleration_seconds" in tol and tol.get("effect") != "NoExecute":
        raise KubernetesConfigError(f"{where}.toleration_seconds: only allowed with effect 'NoExecute'")
    names = {"toleration_seconds": "tolerationSeconds"}
    return {names.get(k, k): v for k, v in tol.items()}


def _check_dataset(volume: dict[str, str]) -> dict[str, str]:
    where = _field(["dataset_volume"])
    if volume and ("host_path" in volume) == ("pvc" in volume):
        raise KubernetesConfigError(f"{where}: give exactly one of host_path or pvc")
    if "pvc" in volume and "mount_path" not in volume:
        raise KubernetesConfigError(f"{where}.mount_path: required with pvc (where the claim is mounted)")
    return volume


def _check_egress(egress: list[dict[str, Any]]) -> list[dict[str, Any]]:
    checked = []
    for i, allowed in enumerate(egress):
        try:
            cidr = str(ipaddress.ip_network(allowed["cidr"], strict=False))
        except ValueError:
            where = _field(["egress", i, "cidr"])
            raise KubernetesConfigError(f"{where}: {allowed['cidr']!r} is not an IP network (CIDR)") from None
        checked.append({**allowed, "cidr": cidr})
    return checked


def parse(conn_id: str, extras: dict[str, Any]) -> ProviderConfig:
    """The validated :class:`ProviderConfig` of a connection's extras; raises naming the bad field."""
    try:
        return _parse(conn_id, extras)
    except KubernetesConfigError as err:
        raise KubernetesConfigError(f"kubernetes connection {conn_id!r}: {err}") from None


def _parse(conn_id: str, extras: dict[str, Any]) -> ProviderConfig:
    raw = extras.get("nvfl") or {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as err:
            raise KubernetesConfigError(f"extra.nvfl: not valid JSON ({err})") from None
    if not isinstance(raw, dict):
        raise KubernetesConfigError(f"extra.nvfl: expected a JSON object, got {type(raw).__name__}")
    errors = sorted(jsonschema.Draft7Validator(SCHEMA).iter_errors(raw), key=lambda e: list(e.path))
    if errors:
        raise KubernetesConfigError(f"{_field(errors[0].absolute_path)}: {errors[0].message}")
    namespace = extras.get("namespace") or extras.get("extra__kubernetes__namespace") or "default"
    if not re.fullmatch(DNS_LABEL, namespace) or len(namespace) > 63:
        raise KubernetesConfigError(f"extra.namespace: {namespace!r} is not a valid namespace (DNS label)")
    settings = dict(raw)
    settings["resources"] = _check_resources(raw.get("resources", {}))
    settings["tolerations"] = [_check_toleration(i, t) for i, t in enumerate(raw.get("tolerations", []))]
    settings["dataset_volume"] = _check_dataset(raw.get("dataset_volume", {}))
    settings["egress"] = _check_egress(raw.get("egress", []))
    return ProviderConfig(conn_id=conn_id, namespace=namespace, **settings)
