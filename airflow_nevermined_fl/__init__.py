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
        "hooks": [
            {
                "integration-name": "Nevermined",
                "python-modules": ["airflow_nevermined_fl.hooks.nevermined"],
            },
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
                        "description": "JSON with chain_id and per contract address + ABI.",
                    },
                    "chain_id": {
                        "label": "Expected chain id",
                        "schema": {"type": ["integer", "null"]},
                    },
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "login"],
                    "relabeling": {"host": "RPC URL", "password": "Account private key"},
                    "placeholders": {"host": "http://127.0.0.1:8545"},
                },
            },
        ],
    }
