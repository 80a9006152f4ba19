"""The queue contract between gateways and workers: broker, routing, actor names, messages."""
