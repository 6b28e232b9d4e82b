"""The provider side of a secure session channel: what a gateway hands the workloads it launches.

The coordinator's provider generates the session's TLS key pair at launch (the key reaches the coordinator
only, as a secret file) and grants it storage: presigned URLs for exactly the session's objects, valid for
the session's time-out (:func:`coordinator_grants`), so that no workload holds a storage key (a
participant's upload grant: a presigned POST that the storage refuses for a body larger than the model's).
A data provider's gateway gives its participant the coordinator's certificate (from the announcement
signed by the coordinator's provider), a seat ticket signed with the provider's key, and a presigned URL
of its dataset when the dataset is on S3.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from airflow_nevermined_fl.objectstore import split_url
from airflow_nevermined_fl.runtime.channel import TLS_NAME, certificate_fingerprint, participant_id
from airflow_nevermined_fl.runtime.config import ChannelSpec, SeatSpec
from airflow_nevermined_fl.runtime.storage import GLOBAL_KEY, METADATA_KEY, MODEL_KEY, upload_key

MAX_GRANT_SECONDS = 7 * 24 * 3600  # S3's limit for a presigned URL


@dataclass(frozen=True)
class KeyPair:
    """A session's TLS certificate (public) and private key (secret), PEM."""

    cert_pem: str
    key_pem: str = field(repr=False)

    @property
    def fingerprint(self) -> str:
        return certificate_fingerprint(self.cert_pem)


def key_pair(session_id: str, valid_for: float) -> KeyPair:
    """A fresh self-signed P-256 certificate for :data:`TLS_NAME`, valid for ``valid_for`` seconds."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{TLS_NAME} {session_id}"[:64])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(seconds=valid_for))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(TLS_NAME)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode())


def grant_seconds(session_timeout: float) -> int:
    """How long a session's grants stay valid: its time-out plus a margin, within S3's limit."""
    return int(min(MAX_GRANT_SECONDS, session_timeout + 600))


def _presign(s3: Any, method: str, bucket: str, key: str, expires: int) -> str:
    action = {"get": "get_object", "put": "put_object"}[method]
    return s3.generate_presigned_url(action, Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires)


def _presign_post(s3: Any, bucket: str, key: str, max_bytes: int, expires: int) -> dict[str, Any]:
    """A presigned POST of ``key`` (``{"url", "fields"}``): its signed policy names the object and bounds
    the body to 1..``max_bytes`` bytes, so the storage refuses a larger one."""
    form: dict[str, Any] = s3.generate_presigned_post(
        bucket, key, Conditions=[["content-length-range", 1, max_bytes]], ExpiresIn=expires
    )
    return form


def coordinator_grants(
    s3: Any,
    bucket: str,
    prefix: str,
    seats: tuple[SeatSpec, ...],
    expires: int,
    initial_model: str | None,
    upload_bytes: int,
) -> dict[str, Any]:
    """The coordinator's ``grants.json``: read and write the global model, read each seat's upload (and
    write it, at most ``upload_bytes``: the coordinator passes that grant on to the seat's participant),
    write the final model; read the warm-start model."""
    prefix = prefix.strip("/") + "/"
    names = {GLOBAL_KEY: ("get", "put"), MODEL_KEY: ("put",), METADATA_KEY: ("put",)}
    objects: dict[str, dict[str, Any]] = {
        name: {method: _presign(s3, method, bucket, prefix + name, expires) for method in methods}
        for name, methods in names.items()
    }
    for name in (upload_key(participant_id(seat.address)) for seat in seats):
        objects[name] = {
            "get": _presign(s3, "get", bucket, prefix + name, expires),
            "post": _presign_post(s3, bucket, prefix + name, upload_bytes, expires),
        }
    grants: dict[str, Any] = {"objects": objects}
    if initial_model:
        grants["initial_model"] = {"get": _presign(s3, "get", *split_url(initial_model), expires)}
    return grants


def data_grant(s3: Any, dataset: str, expires: int) -> str:
    """A presigned GET of a dataset on S3 (``s3://bucket/key``)."""
    return _presign(s3, "get", *split_url(dataset), expires)


def coordinator_files(pair: KeyPair, grants: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """``(files, secret_files)`` of a secure coordinator, named as :class:`ChannelSpec`'s defaults."""
    spec = ChannelSpec(seats=())
    return {spec.tls_cert: pair.cert_pem}, {spec.tls_key: pair.key_pem, spec.grants: json.dumps(grants)}
