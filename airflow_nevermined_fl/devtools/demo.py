"""``nvfl demo``: the embedded stack up (chain, S3, one gateway per provider, Airflow), one FL session
triggered through Airflow's REST API with the providers named by their asset DIDs, and its summary: the
providers' DDO prices, the payments, balances before/after and whether the payouts match the prices.
Airflow and the gateways stay up for the UI."""

from __future__ import annotations

import time
from typing import Any

from airflow_nevermined_fl.devtools import devstack
from airflow_nevermined_fl.devtools.rest import AirflowClient

DAG_ID = "fl_session"


def provider_assets(gateways_state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per provider: its gateway's public fields with the price read from the DDO its gateway serves."""
    from airflow_nevermined_fl import ddo
    from airflow_nevermined_fl.devtools.devstack import gateways
    from airflow_nevermined_fl.protocol.client import GatewayClient

    assets = gateways.public(gateways_state)["gateways"]
    for asset in assets.values():
        document = GatewayClient(asset["url"], audience=asset["address"]).ddo(asset["did"])
        asset["price"] = int(ddo.main_block(document)["service"]["price"])
    return assets


def token_balances(chain_state: dict[str, Any], names: dict[str, str]) -> dict[str, int]:
    """NeverminedToken balance per named address (read-only; no keys involved)."""
    from airflow_nevermined_fl.contracts.client import connect
    from airflow_nevermined_fl.contracts.deployment import load_deployment

    deployment = load_deployment(chain_state["deployment_file"], ("NeverminedToken",))
    w3 = connect(chain_state["rpc_url"])
    token = deployment.contract(w3, "NeverminedToken")
    return {name: int(token.functions.balanceOf(address).call()) for name, address in names.items()}


def session_summary(client: AirflowClient, dag_id: str, run_id: str) -> dict[str, Any]:
    """What a session produced, from its task instances and XComs (no secrets are ever in there)."""
    tis = client.task_instances(dag_id, run_id)
    states = {
        ti["task_id"] + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else ""): ti["state"] for ti in tis
    }
    summary: dict[str, Any] = {"tasks": states}
    done = {key for key, state in states.items() if state == "success"}
    payments = (
        [client.xcom(dag_id, run_id, "lock_coordinator_payment")]
        if "lock_coordinator_payment" in done
        else []
    )
    payments += [
        client.xcom(dag_id, run_id, "lock_payment", map_index=ti["map_index"])
        for ti in tis
        if ti["task_id"] == "lock_payment" and ti["state"] == "success"
    ]
    model = client.xcom(dag_id, run_id, "publish_model") if "publish_model" in done else {}
    released = model.get("released", {})
    summary["payments"] = [
        {
            "name": p["name"],
            "role": p["role"],
            "did": p["did"],
            "provider": p["provider"],
            "price": p["price"],
            "agreement_id": p["agreement"]["agreement_id"],
            "lock_tx": p["tx_hashes"]["lock"],
            "compute_tx": released.get(p["name"], {}).get("compute"),
            "release_tx": released.get(p["name"], {}).get("release"),
        }
        for p in payments
    ]
    if "wait_for_rounds" in done:
        rounds = client.xcom(dag_id, run_id, "wait_for_rounds")
        summary["rounds"] = [
            {k: r.get(k) for k in ("round", "loss", "accuracy", "n_samples", "duration")}
            for r in rounds["rounds_metrics"]
        ]
        summary["final_accuracy"] = rounds["final_accuracy"]
    if "publish_workflow" in done:
        summary["workflow"] = client.xcom(dag_id, run_id, "publish_workflow")
    for key in ("model_did", "model_url", "model_sha256", "ddo_url"):
        summary[key] = model.get(key)
    summary["model_tx_hashes"] = model.get("tx_hashes")
    if "teardown" in done:
        summary["teardown"] = client.xcom(dag_id, run_id, "teardown")
    return summary


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
    balances = {name: {"before": before[name], "after": after[name]} for name in names}
    payouts = {name: after[name] - before[name] for name in providers}
    spent = before["consumer"] - after["consumer"]
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
        "providers": providers,
        "balances": balances,
        "payouts": payouts,
        "payouts_match_prices": all(payouts[n] == p["price"] for n, p in providers.items())
        and spent == sum(p["price"] for p in providers.values()),
        **summary,
    }


def render(result: dict[str, Any]) -> str:
    """Human-readable summary."""
    head = f"FL session {result['run_id']} of DAG {result['dag_id']}"
    lines = [f"{head}: {result['state']} in {result['duration_s']}s"]
    for r in result.get("rounds", []):
        lines.append(
            f"  round {r['round']}: loss {r['loss']:.4f}  accuracy {r['accuracy']:.4f}  "
            f"samples {r['n_samples']}  {r['duration']:.2f}s"
        )
    if result.get("final_accuracy") is not None:
        lines.append(f"final accuracy: {result['final_accuracy']:.4f}")
    if result.get("model_did"):
        lines.append(f"model: {result['model_did']}  {result['model_url']}")
    lines.append("providers (asset DID, price from its DDO in NVM base units, gateway):")
    for name, p in result["providers"].items():
        lines.append(f"  {name:<12} {p['did']}  {p['price']:>4}  {p['url']}")
    lines.append("payments in NVM base units (18 decimals), locked in escrow -> released on completion:")
    for p in result.get("payments", []):
        lines.append(
            f"  {p['name']:<12} {p['price']:>4}  lock {p['lock_tx']}  release {p['release_tx'] or '-'}"
        )
    lines.append("token balances in NVM base units (before -> after):")
    for name, b in result["balances"].items():
        lines.append(f"  {name:<12} {b['before']} -> {b['after']}")
    verdict = "match" if result["payouts_match_prices"] else "DO NOT match"
    lines.append(f"payouts {verdict} the DDO prices: {result['payouts']}")
    lines.append(
        f"Airflow UI: {result['airflow_url']}  user {result['airflow_user']}, "
        f"password in {result['airflow_password_file']}  (`make down` stops the stack)"
    )
    return "\n".join(lines)
