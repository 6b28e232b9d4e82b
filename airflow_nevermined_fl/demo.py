"""``nvfl demo``: the embedded stack up (chain, S3, Airflow), digits split non-IID over 3 data providers,
one FL session triggered through Airflow's REST API, and its summary. Airflow stays up for the UI."""

from __future__ import annotations

import os
import time
from typing import Any

from airflow_nevermined_fl import devstack, params
from airflow_nevermined_fl.paths import state_dir
from airflow_nevermined_fl.rest import AirflowClient

DAG_ID = "fl_session"
PROVIDERS = 3


def demo_conf(manifest: dict[str, Any], rounds: int = 3) -> dict[str, Any]:
    """The session conf: the default actors, one shard per data provider, the model sized to the data."""
    from airflow_nevermined_fl import data

    conf = params.defaults()
    for provider, shard in zip(conf["data_providers"], manifest["providers"], strict=True):
        provider["dataset"] = shard["path"]
    conf["model"] = data.softmax_model(manifest)
    conf["rounds"] = rounds
    return conf


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
            "provider": p["provider"],
            "amount": p["price"],
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


def run(rounds: int = 3, timeout: float = 900.0, backend: str = "local") -> dict[str, Any]:
    """Bring the stack up, trigger one session over REST and wait for it; returns the summary.

    ``backend="docker"``: every workload runs in a container of the runtime image (built if missing)."""
    from airflow_nevermined_fl import data
    from airflow_nevermined_fl.devstack import airflow, chain

    status = devstack.up()
    state = devstack.load_state()
    manifest = data.partition(state_dir() / "data" / "digits-noniid", PROVIDERS, scheme="non-iid", seed=0)
    conf = demo_conf(manifest, rounds)
    if backend == "docker":
        from airflow_nevermined_fl import images

        images.build_all()
        for entry in [conf["coordinator"], *conf["data_providers"]]:
            entry.update(backend="docker", backend_conn_id=airflow.DOCKER_CONN_ID)
    accounts = chain.public(state["chain"])["accounts"]
    names = {"consumer": accounts["consumer"], conf["coordinator"]["name"]: accounts["coordinator_provider"]}
    names |= {p["name"]: a for p, a in zip(conf["data_providers"], accounts["data_providers"], strict=True)}
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
    extra: dict[str, Any] = {}
    if backend == "docker":
        os.environ[f"AIRFLOW_CONN_{airflow.DOCKER_CONN_ID.upper()}"] = airflow.docker_connection_json()
        from airflow_nevermined_fl.launchers.docker import DockerLauncher

        extra["leftover_containers"] = len(
            DockerLauncher(airflow.DOCKER_CONN_ID).find(DAG_ID, dag_run["dag_run_id"])
        )
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
        "balances": {name: {"before": before[name], "after": after[name]} for name in names},
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
    lines.append("payments in NVM base units (18 decimals), locked in escrow -> released on completion:")
    for p in result.get("payments", []):
        lines.append(
            f"  {p['name']:<12} {p['amount']:>4}  lock {p['lock_tx']}  release {p['release_tx'] or '-'}"
        )
    lines.append("token balances in NVM base units (before -> after):")
    for name, b in result["balances"].items():
        lines.append(f"  {name:<12} {b['before']} -> {b['after']}")
    lines.append(
        f"Airflow UI: {result['airflow_url']}  user {result['airflow_user']}, "
        f"password in {result['airflow_password_file']}  (`make down` stops the stack)"
    )
    return "\n".join(lines)
