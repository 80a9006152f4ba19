"""The listener process: user-data stream -> order store, reconciler, outbox relay to NATS."""
