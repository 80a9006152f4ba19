"""The order domain and its store.

The domain is pure: `model`, `fsm`, `rules`, `exact`, `errors` and `log_fields` import no
infrastructure. Around it, the Redis adapters every process shares: the order store
(`store`, `store_queries`, `store_scripts`, `outbox`, `replicas`), the risk state, the
rules cache and the listener's status; and the order metrics. Process plumbing (settings,
logging, connections) is in `runtime`, use cases in `service_layer`.
"""
