"""Publishing and the public API: assets registered once (a re-publish sends no transaction), asset DDOs
describing the data but never locating it, ``info``; HTTPS serving and the refusal of plain HTTP on a
non-loopback address."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest
from gatewaystack import Consumer, Gateway, gateway_config, nvfl, start_gateway, stop_gateway

from airflow_nevermined_fl import ddo, process
from airflow_nevermined_fl.contracts.client import connect
from airflow_nevermined_fl.devtools.devstack import chain
from airflow_nevermined_fl.protocol.client import GatewayClient, GatewayError
from airflow_nevermined_fl.protocol.policy import Policy


def test_publish_is_idempotent(data_gw: Gateway, gw_chain: dict[str, Any]) -> None:
    assert all(a["tx_hash"] for a in data_gw.assets)  # the first publish registered every asset
    w3 = connect(gw_chain["rpc_url"])
    nonce = w3.eth.get_transaction_count(data_gw.address)
    again = nvfl("gateway", "publish", "--config", str(data_gw.config_file), "--json")
    assert again.returncode == 0, again.stderr
    republished = json.loads(again.stdout)
    assert [a["did"] for a in republished] == [a["did"] for a in data_gw.assets]
    assert all(a["tx_hash"] is None for a in republished)
    assert w3.eth.get_transaction_count(data_gw.address) == nonce  # no transaction sent
    text = nvfl("gateway", "publish", "--config", str(data_gw.config_file))
    assert text.returncode == 0 and text.stdout.count("already registered") == 2


def test_asset_ddo_describes_but_never_locates_the_data(
    data_gw: Gateway,
    consumer: Consumer,
    manifest: dict[str, Any],
    s3_dataset: str,
    secrets_of: list[str],
) -> None:
    client = consumer.client(data_gw)
    assert [a["price"] for a in data_gw.assets] == ["5", "7.5"]  # tokens, as configured
    for asset, shard in zip(data_gw.assets, manifest["providers"], strict=True):
        doc = client.ddo(asset["did"])
        ddo.verify(doc)
        main = ddo.main_block(doc)
        assert main["dataset"] == {"features": 64, "classes": 10, "rows": shard["rows"]}
        assert main["provider"] == data_gw.address
        assert main["service"] == {
            "type": "fl-participant",
            "endpoint": data_gw.endpoint,
            "price": asset["price"],
            "token": consumer.keeper.token_address,
        }
        record = consumer.keeper.get_did(asset["did"])
        assert (record.owner, record.checksum, record.url) == (
            data_gw.address,
            doc["proof"]["checksum"],
            asset["ddo_url"],
        )
        text = json.dumps(doc)
        for hidden in [shard["path"], Path(shard["path"]).name, s3_dataset, *secrets_of]:
            assert hidden not in text
    with pytest.raises(GatewayError) as err:
        client.ddo("did:nv:" + "ab" * 32)
    assert err.value.status_code == 404 and "no asset DDO" in err.value.detail


def test_info_lists_the_services(data_gw: Gateway, coordinator_gw: Gateway, consumer: Consumer) -> None:
    info = consumer.client(data_gw).info()
    assert info["name"] == "provider-1" and info["provider"] == data_gw.address
    assert info["chain_id"] == chain.CHAIN_ID and info["version"]
    assert info["services"] == [
        {
            "name": a["name"],
            "type": a["type"],
            "did": a["did"],
            "price": a["price"],
            "ready": True,
            "reason": None,
            "policy": Policy().public(),
        }
        for a in data_gw.assets
    ]
    assert info["backend"] == {"type": "local", "healthy": True}
    assert info["capacity"]["max_executions"] == 4
    coordinator = consumer.client(coordinator_gw).info()
    assert [(s["type"], s["price"], s["ready"]) for s in coordinator["services"]] == [
        ("fl-coordinator", "10", True)
    ]


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (PEM files)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nvfl gateway test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "tls.crt", directory / "tls.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_file.chmod(0o600)
    return cert_file, key_file


def test_https_with_the_configured_certificate(
    tmp_path: Path, gw_chain: dict[str, Any], seaweed: dict[str, Any], consumer: Consumer
) -> None:
    tls = _self_signed(tmp_path)
    services = [{"name": "tls-coordinator", "type": "fl-coordinator", "price": 3}]
    gateway = start_gateway(
        tmp_path / "gw", "tls", chain.COORDINATOR_PROVIDER, gw_chain, seaweed, services, tls
    )
    try:
        assert gateway.endpoint.startswith("https://")
        assert consumer.client(gateway).info()["services"][0]["ready"]
        assert gateway.asset("tls-coordinator")["ddo_url"].startswith("https://")
        with pytest.raises(GatewayError, match="unreachable"):  # the system CAs do not trust it
            GatewayClient(gateway.endpoint, audience=gateway.address).info()
    finally:
        stop_gateway(gateway)


def test_plain_http_on_a_public_address_is_refused(
    tmp_path: Path, gw_chain: dict[str, Any], seaweed: dict[str, Any]
) -> None:
    listen = {"host": "0.0.0.0", "port": process.free_port()}
    services = [{"name": "c", "type": "fl-coordinator", "price": 1}]
    config = gateway_config(
        tmp_path, "public", chain.COORDINATOR_PROVIDER, gw_chain, seaweed, services, listen
    )
    served = nvfl("gateway", "serve", "--config", str(config))
    assert served.returncode == 2
    assert "listen.host: 0.0.0.0 is not loopback" in served.stderr and "tls_cert" in served.stderr
    assert not process.port_open("127.0.0.1", listen["port"])


@pytest.mark.parametrize(
    ("price", "message"),
    [
        ("0.0000000000000000001", "services[1].price: 0.0000000000000000001 has more decimals than"),
        ("-1", "services[1].price: expected a non-negative number of tokens"),
        (0, "services[1].price: expected a positive number of tokens, got 0"),
    ],
)
def test_a_price_the_token_cannot_pay_is_refused_before_any_transaction(
    tmp_path: Path, gw_chain: dict[str, Any], seaweed: dict[str, Any], price: Any, message: str
) -> None:
    """A price is in tokens: finer than one base unit (the token's 18 decimals), negative or zero, the
    publish fails naming the service's field and registers nothing."""
    services = [
        {"name": "fine", "type": "fl-coordinator", "price": "0.5"},
        {"name": "bad", "type": "fl-coordinator", "price": price},
    ]
    listen = {"host": "127.0.0.1", "port": process.free_port()}
    config = gateway_config(
        tmp_path, "prices", chain.COORDINATOR_PROVIDER, gw_chain, seaweed, services, listen
    )
    w3 = connect(gw_chain["rpc_url"])
    nonce = w3.eth.get_transaction_count(chain.account(chain.COORDINATOR_PROVIDER).address)
    published = nvfl("gateway", "publish", "--config", str(config))
    assert published.returncode == 2 and message in published.stderr, published.stderr
    assert w3.eth.get_transaction_count(chain.account(chain.COORDINATOR_PROVIDER).address) == nonce
