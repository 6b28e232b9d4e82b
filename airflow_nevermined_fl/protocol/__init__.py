"""What the consumer and the providers' gateways share: the API's paths, signed requests (:mod:`.auth`)
and the consumer's client (:mod:`.client`)."""

API = "/api/v1"
