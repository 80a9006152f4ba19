"""The order execution service: one namespace for every product package.

The packages sit at the top of the repository (`gateway/`, `workers/`, `proto/`, ...), where
the design card puts them; this folder links each one in, so they import and install as
`order_execution.gateway`, `order_execution.workers`, ... and nothing generic reaches
site-packages. See the README's "Layout".
"""
