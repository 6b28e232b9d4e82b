"""Apache Airflow provider running Federated Learning sessions on Nevermined Compute-to-Data."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def get_provider_info() -> dict[str, Any]:
    """Provider metadata read by Airflow's ``apache_airflow_provider`` entry point."""
    return {
        "package-name": "airflow-nevermined-fl",
        "name": "Nevermined Federated Learning",
        "description": "Federated Learning sessions (xain-fl) on Nevermined Compute-to-Data.",
        "versions": [__version__],
        "integrations": [
            {"integration-name": "Nevermined", "external-doc-url": "https://docs.nevermined.io/"},
        ],
        "plugins": [
            {
                "name": "nevermined_fl_rounds",
                "plugin-class": "airflow_nevermined_fl.plugins.rounds_chart.RoundsChartPlugin",
            },
        ],
        "hooks": [
            {
                "integration-name": "Nevermined",
                "python-modules": [
                    "airflow_nevermined_fl.hooks.nevermined",
                    "airflow_nevermined_fl.hooks.storage",
                ],
            },
        ],
        "operators": [
            {
                "integration-name": "Nevermined",
                "python-modules": [
                    "airflow_nevermined_fl.operators.workflow",
                    "airflow_nevermined_fl.operators.payment",
                    "airflow_nevermined_fl.operators.workloads",
                    "airflow_nevermined_fl.operators.model",
                ],
            },
        ],
        "sensors": [
            {
                "integration-name": "Nevermined",
                "python-modules": ["airflow_nevermined_fl.sensors.coordinator"],
            },
        ],
        "triggers": [
            {
                "integration-name": "Nevermined",
                "python-modules": [
                    "airflow_nevermined_fl.triggers.coordinator",
                    "airflow_nevermined_fl.triggers.chain",
                ],
            },
        ],
        "asset-uris": [
            {"schemes": ["nevermined-fl"], "handler": "airflow_nevermined_fl.assets.sanitize_uri"},
        ],
        "connection-types": [
            {
                "connection-type": "nevermined",
                "hook-class-name": "airflow_nevermined_fl.hooks.nevermined.NeverminedHook",
                "hook-name": "Nevermined",
                "conn-fields": {
                    "deployment_file": {
                        "label": "Deployment file",
                        "schema": {"type": ["string", "null"]},
                        "description": "JSON with chain_id and per contract address + ABI "
                        "(or give the contract addresses instead).",
                    },
                    "addresses": {
                        "label": "Contract addresses",
                        "schema": {"type": ["object", "null"]},
                        "description": "{contract name: address} of the Nevermined contracts, their ABIs "
                        "from the compiled contracts; used when no deployment file is given.",
                    },
                    "chain_id": {
                        "label": "Expected chain id",
                        "schema": {"type": ["integer", "null"]},
                        "description": "Checked against the node's chain id (empty: not checked).",
                    },
                    "rpc_retries": {
                        "label": "RPC connection attempts",
                        "schema": {"type": ["integer", "null"], "minimum": 1},
                        "description": "Attempts to reach the RPC node before failing (empty: 5).",
                    },
                    "block_time": {
                        "label": "Block time (s)",
                        "schema": {"type": ["number", "null"], "exclusiveMinimum": 0},
                        "description": "Seconds between blocks, at least: the session's agreements stay "
                        "unrefundable for its session_timeout in blocks (empty: 12).",
                    },
                    "gateway_ca_file": {
                        "label": "Gateways' CA bundle",
                        "schema": {"type": ["string", "null"]},
                        "description": "Verifies the providers' HTTPS gateways (default: the system's CAs).",
                    },
                    "explorer_tx_url": {
                        "label": "Block explorer transaction URL",
                        "schema": {"type": ["string", "null"]},
                        "description": "The tasks' transaction links, e.g. https://<explorer>/tx/{tx_hash}"
                        " (empty: no links).",
                    },
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "login"],
                    "relabeling": {"host": "RPC URL", "port": "RPC port", "password": "Account private key"},
                    "placeholders": {
                        "host": "http://127.0.0.1:8545",
                        "port": "8545 (when the RPC URL has no scheme)",
                        "deployment_file": "/path/to/deployment.json",
                    },
                },
            },
            {
                "connection-type": "nvfl_storage",
                "hook-class-name": "airflow_nevermined_fl.hooks.storage.StorageHook",
                "hook-name": "Nevermined FL storage (S3)",
                "conn-fields": {
                    "endpoint_url": {
                        "label": "S3 endpoint URL",
                        "schema": {"type": "string"},
                        "description": "S3-compatible endpoint, e.g. SeaweedFS or AWS.",
                    },
                    "bucket": {
                        "label": "Bucket",
                        "schema": {"type": "string"},
                        "description": "The bucket of the sessions' DDOs, weights and models.",
                    },
                    "region_name": {
                        "label": "Region",
                        "schema": {"type": ["string", "null"]},
                        "description": "S3 region (empty: us-east-1).",
                    },
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "host"],
                    "relabeling": {"login": "Access key id", "password": "Secret access key"},
                    "placeholders": {"endpoint_url": "http://127.0.0.1:8333", "bucket": "nvfl"},
                },
            },
        ],
    }
