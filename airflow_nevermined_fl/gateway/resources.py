"""A gateway's own resources, built from its config: its chain account and its storage.

The gateway imports no Airflow: its chain logic is the :class:`~airflow_nevermined_fl.contracts.keeper.Keeper`
and its storage a plain boto3 client with the credentials of its own config.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from contextlib import closing
from functools import cached_property
from pathlib import Path
from typing import Any

import httpx

from airflow_nevermined_fl import objectstore
from airflow_nevermined_fl.contracts.deployment import load_deployment
from airflow_nevermined_fl.contracts.keeper import HOOK_CONTRACTS, Keeper, KeeperSettings
from airflow_nevermined_fl.gateway.config import GatewayConfig, Service

MAX_DOCUMENT = 1_000_000
"""Largest DDO the gateway fetches (bytes)."""
FETCH_SECONDS = 20.0
"""Longest a whole fetch may take (s), however slowly its server drips."""
FETCH_READ_SECONDS = 5.0
"""Longest wait for the next bytes of a fetch (s): a fetch ends at most this long past its deadline."""
CHUNK = 64 * 1024


class FetchError(RuntimeError):
    """A URL could not be read; the message names the URL, never a credential."""


def _bounded(url: str, chunks: Iterable[bytes], limit: int, deadline: float, seconds: float) -> bytes:
    """``chunks`` joined (linear), refused past ``limit`` bytes or past ``deadline`` (monotonic)."""
    data = bytearray()
    for chunk in chunks:
        data += chunk
        if len(data) > limit:
            raise FetchError(f"{url}: larger than {limit} bytes")
        if time.monotonic() > deadline:
            raise FetchError(f"{url}: not read within {seconds:g}s")
    return bytes(data)


class Provider:
    """The provider's account (``keeper``, ``address``) and storage (``s3``) as its config gives them."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.keeper = Keeper(
            KeeperSettings(
                rpc_url=config.rpc_url,
                private_key=config.private_key(),
                deployment=load_deployment(config.deployment_file, HOOK_CONTRACTS),
                chain_id=config.chain_id,
                where=f"gateway {config.name}",
            )
        )
        self.address = self.keeper.account().address

    @property
    def chain_id(self) -> int | None:
        configured = self.config.chain_id
        return configured if configured is not None else self.keeper.keeper_settings().deployment.chain_id

    @cached_property
    def s3(self) -> Any:
        storage, creds = self.config.storage, self.config.storage.credentials()
        return objectstore.client(
            storage.endpoint_url, storage.region_name, creds["access_key"], creds["secret_key"]
        )

    def read(self, url: str, limit: int = MAX_DOCUMENT, seconds: float = FETCH_SECONDS) -> bytes:
        """The content at an ``s3://`` (this gateway's storage) or ``http(s)://`` URL: at most ``limit``
        bytes, read within ``seconds`` in all (a slow-drip server is cut off), in time linear in its size."""
        deadline = time.monotonic() + seconds
        if url.startswith("s3://"):
            return self._read_s3(url, limit, deadline, seconds)
        if url.startswith(("http://", "https://")):
            try:
                timeout = httpx.Timeout(min(seconds, FETCH_READ_SECONDS))
                with httpx.stream("GET", url, timeout=timeout) as response:
                    response.raise_for_status()
                    return _bounded(url, response.iter_bytes(), limit, deadline, seconds)
            except httpx.HTTPError as exc:
                raise FetchError(f"{url}: {type(exc).__name__}: {exc}") from None
        raise FetchError(f"unsupported URL {url!r}: expected s3:// or http(s)://")

    def _read_s3(self, url: str, limit: int, deadline: float, seconds: float) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            bucket, key = objectstore.split_url(url)
        except ValueError as exc:
            raise FetchError(str(exc)) from None
        try:
            obj = self.s3.get_object(Bucket=bucket, Key=key)
            if obj["ContentLength"] > limit:
                raise FetchError(f"{url}: larger than {limit} bytes")
            with closing(obj["Body"]) as body:
                return _bounded(url, body.iter_chunks(CHUNK), limit, deadline, seconds)
        except (BotoCoreError, ClientError) as exc:
            raise FetchError(f"{url}: {type(exc).__name__}: {exc}") from None

    def read_dataset(self, service: Service, limit: int) -> bytes:
        """A participant service's dataset (local path or ``s3://``); errors never name its location."""
        assert service.dataset is not None
        try:
            if service.dataset.startswith("s3://"):
                return self.read(service.dataset, limit)
            path = Path(service.dataset)
            if path.stat().st_size > limit:
                raise FetchError("larger than the limit")
            return path.read_bytes()
        except (OSError, FetchError) as exc:
            reason = type(exc).__name__ if isinstance(exc, OSError) else "unreadable"
            raise FetchError(f"service {service.name}: dataset unreadable ({reason})") from None

    def dataset_present(self, service: Service) -> bool:
        """Whether a participant service's dataset exists (never raises)."""
        assert service.dataset is not None
        if not service.dataset.startswith("s3://"):
            return Path(service.dataset).is_file()
        try:
            bucket, key = objectstore.split_url(service.dataset)
            self.s3.head_object(Bucket=bucket, Key=key)
        except Exception:  # noqa: BLE001 - any failure means "not present" for the readiness report
            return False
        return True
