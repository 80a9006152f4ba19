"""Use cases more than one process runs: the kill switch's cancel walk, bringing an order in
line with the exchange's record.

Above the store and the exchange client, below the processes (gateway, workers, listener)
that call them.
"""
