"""Execution: the exchange client, the order actors and what runs them."""
