"""Command-line entry points: `order-execution <command>`."""
