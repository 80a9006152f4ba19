"""The chaos test: the whole service under process kills, server restarts and exchange faults."""
