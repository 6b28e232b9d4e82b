"""Publish a gateway's services: one compute asset DDO per service, its DID registered on chain.

The DDO is served by the gateway itself (``GET /api/v1/ddo/{did}``) and registered with that URL. A
participant asset describes its dataset (features, classes, rows), never where the data is; every asset
publishes its service's policy (``main.policy``: what the gateway runs, :mod:`..protocol.policy`). The
DID's seed is the checksum of the asset's ``main`` block, so publishing unchanged services again sends no
transaction, and a changed service (price, endpoint, data, policy) becomes a new asset.
"""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from airflow_nevermined_fl import ddo
from airflow_nevermined_fl.gateway.config import GatewayConfig, GatewayConfigError, Service
from airflow_nevermined_fl.gateway.resources import Provider
from airflow_nevermined_fl.protocol import API

MAX_DATASET = 2_000_000_000
DID_PATTERN = re.compile(r"did:nv:[0-9a-f]{64}")


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` atomically (readers never see a partial file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


def ddo_path(config: GatewayConfig, did: str) -> Path | None:
    """Where the asset DDO of ``did`` is stored (None for a malformed DID)."""
    if not DID_PATTERN.fullmatch(did):
        return None
    return config.state_dir / "ddo" / f"{did.removeprefix('did:nv:')}.json"


def load_assets(config: GatewayConfig) -> list[dict[str, Any]]:
    """The assets of the last publish (``[]`` before the first)."""
    path = config.state_dir / "assets.json"
    return json.loads(path.read_text()) if path.exists() else []


def published_at(config: GatewayConfig) -> int | None:
    """When the last publish wrote its assets (ns; None before the first): a publish changes it."""
    path = config.state_dir / "assets.json"
    return path.stat().st_mtime_ns if path.exists() else None


def asset_ddo(config: GatewayConfig, did: str) -> dict[str, Any] | None:
    """The published asset DDO of ``did``, None when this gateway has none."""
    path = ddo_path(config, did)
    return json.loads(path.read_text()) if path and path.is_file() else None


def dataset_description(provider: Provider, service: Service) -> dict[str, int]:
    """Public shape of a participant's dataset: ``{"features", "classes", "rows"}`` from its arrays x, y."""
    with np.load(io.BytesIO(provider.read_dataset(service, MAX_DATASET)), allow_pickle=False) as npz:
        x, y = npz["x"], npz["y"]
        return {"features": int(x.shape[1]), "classes": int(np.unique(y).size), "rows": int(len(x))}


def policy_checksum(service: Service) -> str:
    """What ``assets.json`` records of a service's policy: a changed policy is a service to publish again."""
    return ddo.checksum(service.policy.public())


def publish(config: GatewayConfig) -> list[dict[str, Any]]:
    """Store and register the asset of every configured service; returns
    ``[{"name", "type", "did", "price", "policy", "ddo_url", "tx_hash"}]`` (``policy``: its checksum;
    ``tx_hash`` None: already registered).
    Every price must be a whole number of the token's base units, checked before any transaction."""
    if not config.public_url and not config.port:
        raise GatewayConfigError(
            "listen.port: publishing needs a fixed port (or public_url) consumers can reach"
        )
    provider = Provider(config)
    keeper, address = provider.keeper, provider.address
    for i, service in enumerate(config.services):
        keeper.token.base(service.price, f"services[{i}].price")
    assets = []
    for service in config.services:
        dataset = dataset_description(provider, service) if service.type == "fl-participant" else None
        main = ddo.asset_main(
            service.type, service.name, address, config.url(), service.price, keeper.token_address, dataset
        )
        main["policy"] = service.policy.public()
        checksum = ddo.checksum(main)  # also the DID's seed
        did = keeper.did_for(checksum, address)
        path = ddo_path(config, did)
        assert path is not None
        if asset_ddo(config, did) is None:
            write_json(path, ddo.build(did, address, main))
        ddo_url = f"{config.url()}{API}/ddo/{did}"
        record = keeper.register_did(checksum, checksum, [address], ddo_url)
        assets.append(
            {
                "name": service.name,
                "type": service.type,
                "did": did,
                "price": service.price,
                "policy": policy_checksum(service),
                "ddo_url": ddo_url,
                "tx_hash": record.tx_hash,
            }
        )
    write_json(config.state_dir / "assets.json", assets)
    return assets
