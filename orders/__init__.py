"""The shared order domain: models, the state machine, storage and the event bus.

`model`, `fsm`, `rules` and `errors` are pure; `store`, `events` and `rules_store` are
the Redis and NATS adapters around them.
"""
