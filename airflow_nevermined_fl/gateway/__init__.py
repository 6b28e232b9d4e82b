"""The provider side: the gateway each provider runs next to its data and infrastructure.

Modelled on the Nevermined Gateway's compute endpoints: it publishes the provider's compute assets
(:mod:`.publish`), checks each agreement on chain with the provider's own key before it launches anything
(:mod:`.checks`), runs the workloads on the provider's backend (:mod:`.launchers`), and settles its own
escrow on completion (:mod:`.executions`). Consumers reach it through :mod:`~airflow_nevermined_fl.protocol`.
"""
