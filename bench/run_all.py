"""Run every benchmark in bench/ in turn (`make bench`); each writes its own JSON and PNG."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHES = [
    "queue_hop.py",
    "order_latency.py",
    "simulator_roundtrip.py",
    "throughput.py",
    "scrape_load.py",
    "replica_acks.py",
    "account_flood.py",
]


def main() -> int:
    here = Path(__file__).resolve().parent
    failed = []
    for name in BENCHES:
        print(f"\n==> bench/{name}", flush=True)
        if subprocess.call([sys.executable, str(here / name)]) != 0:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
