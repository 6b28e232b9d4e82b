"""Provider gateways: the service each provider runs next to its data and infrastructure.

Modelled on the Nevermined Gateway's compute endpoints. The consumer's Airflow talks to gateways only
(:mod:`.client`), proving its address by a signed request (:mod:`.auth`); the gateway (:mod:`.app`)
checks the agreement on chain with its own key and launches on its own backend.
"""

API = "/api/v1"
