"""Devstack component "s3": SeaweedFS on 127.0.0.1 only, real credentials, reuse when alive."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

from airflow_nevermined_fl.devtools.devstack import s3


def _listening_addresses(pid: int) -> set[str]:
    """Local addresses of the TCP sockets ``pid`` listens on (from /proc, IPv4 and IPv6)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    addresses = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A = LISTEN
                addresses.add(fields[1].rsplit(":", 1)[0])
    return addresses


def test_every_listener_is_loopback_only(seaweed: dict[str, Any]) -> None:
    addresses = _listening_addresses(seaweed["pid"])
    assert addresses, "weed listens on nothing?"
    assert addresses == {"0100007F"}, addresses  # 127.0.0.1 in /proc's little-endian hex


def test_credentials_are_required_and_private(seaweed: dict[str, Any], s3_client: Any) -> None:
    s3_client.put_object(Bucket=seaweed["bucket"], Key="probe", Body=b"ok")
    assert s3_client.get_object(Bucket=seaweed["bucket"], Key="probe")["Body"].read() == b"ok"
    anonymous = boto3.client(
        "s3",
        endpoint_url=seaweed["endpoint"],
        region_name="us-east-1",
        config=Config(signature_version=UNSIGNED),
    )
    with pytest.raises(ClientError):
        anonymous.get_object(Bucket=seaweed["bucket"], Key="probe")
    wrong = boto3.client(
        "s3",
        endpoint_url=seaweed["endpoint"],
        region_name="us-east-1",
        aws_access_key_id=seaweed["access_key"],
        aws_secret_access_key="not-the-secret",
    )
    with pytest.raises(ClientError):
        wrong.head_bucket(Bucket=seaweed["bucket"])
    identities = Path(seaweed["data_dir"]).parent / "identities.json"
    assert stat.S_IMODE(identities.stat().st_mode) == 0o600
    public = s3.public(seaweed)
    assert public == {"s3_endpoint": seaweed["endpoint"], "s3_bucket": "nvfl"}
    assert seaweed["secret_key"] not in repr(public)


def test_up_reuses_a_live_instance(seaweed: dict[str, Any]) -> None:
    home = Path(seaweed["data_dir"]).parent.parent
    assert s3.up(home, seaweed) is seaweed and s3.alive(seaweed)


def test_connection_uri_parses_in_airflow(seaweed: dict[str, Any]) -> None:
    from airflow.models.connection import Connection

    connection = Connection(conn_id="nvfl_storage_default", uri=s3.connection_uri(seaweed))
    assert connection.conn_type == "nvfl_storage"
    assert (connection.login, connection.password) == (seaweed["access_key"], seaweed["secret_key"])
    assert connection.extra_dejson == {"endpoint_url": seaweed["endpoint"], "bucket": seaweed["bucket"]}
