"""What every process runs on: settings, logging, shutdown, metrics serving and connections.

Process plumbing, not the order domain: nothing here imports `orders`, so the domain and
the store can build on it.
"""
