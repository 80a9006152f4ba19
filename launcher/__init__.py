"""Starts and stops a stack: the servers (Redis, NATS, or HA sets of them), the simulator, the
gateway, workers and listeners, with their ports, environment and settings.

The one launcher behind `order-execution up`, the tests and the benchmarks. It starts the
service's processes as `python -m order_execution.cli <role>` and never imports their code.
"""
