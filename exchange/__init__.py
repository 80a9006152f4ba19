"""Talking to Binance USD-M Futures: the signed REST client, its error classes, the user-data stream."""
