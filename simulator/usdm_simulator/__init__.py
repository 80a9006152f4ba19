"""A local, faithful Binance USD-M Futures exchange: REST, user-data websocket, admin API and faults.

Start it with ``python -m usdm_simulator`` or in-process with ``usdm_simulator.app.create_app(config)``.
It imports nothing from the rest of the project, so it catches the client's mistakes instead of sharing them.
"""
