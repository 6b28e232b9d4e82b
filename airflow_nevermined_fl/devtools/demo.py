"""``nvfl demo``: the embedded stack up (chain, S3, one gateway per provider, Airflow), one FL session
triggered through Airflow's REST API with the providers named by their asset DIDs, and its summary: the
providers' DDO prices, the payments, balances before/after and whether the payouts match the prices, all
in token units (plain decimal strings; the balances are read in base units and converted exactly).
Airflow and the gateways stay up for the UI."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from airflow_nevermined_fl.client import AirflowClient
from airflow_nevermined_fl.devtools import devstack
from airflow_nevermined_fl.session_cli import render_round
from airflow_nevermined_fl.session_info import session_summary

if TYPE_CHECKING:
    from web3.contract import Contract

    from airflow_nevermined_fl.contracts.units import Token

DAG_ID = "fl_session"


def provider_assets(gateways_state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per provider: its gateway's public fields with the price (tokens) read from the DDO its gateway
    serves."""
    from airflow_nevermined_fl import ddo
    from airflow_nevermined_fl.devtools.devstack import gateways
    from airflow_nevermined_fl.protocol.client import GatewayClient

    assets = gateways.public(gateways_state)["gateways"]
    for asset in assets.values():
        document = GatewayClient(asset["url"], audience=asset["address"]).ddo(asset["did"])
        asset["price"] = str(ddo.main_block(document)["service"]["price"])
    return assets


def _token_contract(chain_state: dict[str, Any]) -> Contract:
    from airflow_nevermined_fl.contracts.client import connect
    from airflow_nevermined_fl.contracts.deployment import load_deployment

    deployment = load_deployment(chain_state["deployment_file"], ("NeverminedToken",))
    return deployment.contract(connect(chain_state["rpc_url"]), "NeverminedToken")


def token_units(chain_state: dict[str, Any]) -> Token:
    """The chain's NeverminedToken: its symbol and decimals."""
    from airflow_nevermined_fl.contracts.units import read_token

    return read_token(_token_contract(chain_state))


def token_balances(chain_state: dict[str, Any], names: dict[str, str]) -> dict[str, int]:
    """NeverminedToken balance in base units per named address (read-only; no keys involved)."""
    token = _token_contract(chain_state)
    return {name: int(token.functions.balanceOf(address).call()) for name, address in names.items()}


def _leftover_containers(payments: list[dict[str, Any]]) -> int:
    """Containers still labelled with one of the session's agreements (gateways label a run by it)."""
    from airflow_nevermined_fl.devtools import images
    from airflow_nevermined_fl.gateway.launchers.docker import LABEL

    engine = images.local_engine()
    return sum(
        len(engine.containers(all=True, filters={"label": [f"{LABEL}.run_id={p['agreement_id']}"]}))
        for p in payments
    )


def run(rounds: int = 3, timeout: float = 900.0, backend: str = "local") -> dict[str, Any]:
    """Bring the stack up, trigger one session over REST and wait for it; returns the summary.

    ``backend="docker"``: the gateways run every workload in a container of the runtime image (built if
    missing)."""
    from airflow_nevermined_fl.devtools.devstack import airflow, chain, gateways

    if backend == "docker":
        from airflow_nevermined_fl.devtools import images

        images.build_all()
    status = devstack.up(backend=backend)
    state = devstack.load_state()
    providers = provider_assets(state["gateways"])
    names = {"consumer": chain.accounts()["consumer"]} | {n: p["address"] for n, p in providers.items()}
    conf = {"rounds": rounds, **gateways.session_providers(state["gateways"])}
    token = token_units(state["chain"])
    before = token_balances(state["chain"], names)
    client = AirflowClient(status["airflow_url"], airflow.USER, airflow.password(state["airflow"]))
    try:
        client.wait_dag(DAG_ID)
        started = time.monotonic()
        dag_run = client.trigger(DAG_ID, conf)
        final = client.wait_run(DAG_ID, dag_run["dag_run_id"], timeout)
        duration = time.monotonic() - started
        summary = session_summary(client, DAG_ID, dag_run["dag_run_id"])
    finally:
        client.close()
    after = token_balances(state["chain"], names)
    payouts = {name: after[name] - before[name] for name in providers}
    spent = before["consumer"] - after["consumer"]
    prices = {name: token.base(p["price"]) for name, p in providers.items()}
    extra = {"leftover_containers": _leftover_containers(summary["payments"])} if backend == "docker" else {}
    return {
        "backend": backend,
        **extra,
        "airflow_url": status["airflow_url"],
        "airflow_user": status["airflow_user"],
        "airflow_password_file": status["airflow_password_file"],
        "dag_id": DAG_ID,
        "run_id": dag_run["dag_run_id"],
        "state": final["state"],
        "duration_s": round(duration, 1),
        "token": asdict(token),
        "providers": providers,
        "balances": {n: {"before": token.text(before[n]), "after": token.text(after[n])} for n in names},
        "payouts": {name: token.text(paid) for name, paid in payouts.items()},
        "payouts_match_prices": payouts == prices and spent == sum(prices.values()),
        **summary,
    }


def render(result: dict[str, Any]) -> str:
    """Human-readable summary."""
    head = f"FL session {result['run_id']} of DAG {result['dag_id']}"
    lines = [f"{head}: {result['state']} in {result['duration_s']}s"]
    lines += [f"  {render_round(r)}" for r in result.get("rounds", [])]
    if result.get("final_accuracy") is not None:
        lines.append(f"final accuracy: {result['final_accuracy']:.4f}")
    if result.get("model_did"):
        lines.append(f"model: {result['model_did']}  {result['model_url']}")
    symbol = result["token"]["symbol"]
    lines.append(f"providers (asset DID, price in {symbol} from its DDO, gateway):")
    for name, p in result["providers"].items():
        lines.append(f"  {name:<12} {p['did']}  {p['price']:>6}  {p['url']}")
    lines.append(f"payments in {symbol}, locked in escrow -> released on completion:")
    for p in result.get("payments", []):
        lines.append(
            f"  {p['name']:<12} {p['price']:>6}  lock {p['lock_tx']}  release {p['release_tx'] or '-'}"
        )
    lines.append(f"token balances in {symbol} (before -> after):")
    for name, b in result["balances"].items():
        lines.append(f"  {name:<12} {b['before']} -> {b['after']}")
    verdict = "match" if result["payouts_match_prices"] else "DO NOT match"
    paid = ", ".join(f"{name} +{amount}" for name, amount in result["payouts"].items())
    lines.append(f"payouts in {symbol} {verdict} the DDO prices: {paid}")
    lines.append(
        f"Airflow UI: {result['airflow_url']}  user {result['airflow_user']}, "
        f"password in {result['airflow_password_file']}  (`make down` stops the stack)"
    )
    return "\n".join(lines)
