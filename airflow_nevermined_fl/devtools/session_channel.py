"""The secure channel of a session run without gateways (bare and local sessions, benches, tests).

What the gateways would hand out, made here for a throwaway set of data providers: one fresh key per
participant (its seat ticket), the session's TLS key pair, and grants on the given storage signed with the
devstack's keys. No workload gets a storage key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account import Account

from airflow_nevermined_fl.gateway.channel import KeyPair, coordinator_files, coordinator_grants, key_pair
from airflow_nevermined_fl.runtime.channel import issue
from airflow_nevermined_fl.runtime.config import ChannelSpec, SeatSpec, StorageSpec
from airflow_nevermined_fl.runtime.storage import DEFAULT_MAX_BYTES

GRANT_SECONDS = 6 * 3600


@dataclass
class SessionChannel:
    """``keys``: one provider key per participant, in seat order (secret)."""

    session_id: str
    pair: KeyPair
    keys: list[str] = field(repr=False)
    seats: tuple[SeatSpec, ...]
    grants: dict[str, Any] = field(repr=False)

    @classmethod
    def create(
        cls,
        s3: Any,
        storage: StorageSpec,
        session_id: str,
        max_samples: list[int],
        initial_model: str | None = None,
        upload_bytes: int = DEFAULT_MAX_BYTES,
    ) -> SessionChannel:
        """A channel for ``len(max_samples)`` participants whose datasets declare those rows, each upload
        at most ``upload_bytes`` (default: any model's, see :func:`upload_limit`)."""
        keys = ["0x" + os.urandom(32).hex() for _ in max_samples]
        seats = tuple(
            SeatSpec(Account.from_key(key).address.lower(), rows)
            for key, rows in zip(keys, max_samples, strict=True)
        )
        grants = coordinator_grants(
            s3, storage.bucket, storage.prefix, seats, GRANT_SECONDS, initial_model, upload_bytes
        )
        return cls(session_id, key_pair(session_id, GRANT_SECONDS), keys, seats, grants)

    @property
    def spec(self) -> ChannelSpec:
        return ChannelSpec(seats=self.seats)

    def coordinator_files(self) -> tuple[dict[str, str], dict[str, str]]:
        """``(files, secret_files)`` to put next to the coordinator's config."""
        return coordinator_files(self.pair, self.grants)

    def ticket(self, index: int) -> str:
        """Participant ``index``'s seat credential."""
        return issue(self.keys[index], self.session_id, self.pair.fingerprint)

    def write_coordinator_files(self, directory: Path) -> None:
        """The coordinator's files next to its config; the secret ones mode 0600."""
        files, secret_files = self.coordinator_files()
        write_files(directory, files, secret_files)


def write_files(directory: Path, files: dict[str, str], secret_files: dict[str, str]) -> None:
    """``files`` (0644) and ``secret_files`` (0600) in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in {**files, **secret_files}.items():
        path = directory / name
        path.unlink(missing_ok=True)
        mode = 0o600 if name in secret_files else 0o644
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "w") as handle:
            handle.write(content)
