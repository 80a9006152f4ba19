"""Benchmark: signed order round trips against the simulator, with an unsigned baseline in the same run.

Starts ``python -m usdm_simulator`` as a subprocess on a free 127.0.0.1 port (killed by pid at the end), then
for each run: N unsigned ``GET /fapi/v1/time`` (baseline), then N signed order round trips, each a
``POST /fapi/v1/order`` (LIMIT GTC that rests) followed by a ``DELETE /fapi/v1/order``, all on one
keep-alive httpx client; then the same with a minimal raw-socket HTTP/1.1 client (``raw_*`` rows), which
shows how much of the latency is the simulator and how much is the httpx client. Prints a table (median,
p99, ratio to the same client's baseline median) and writes ``bench/results/simulator_roundtrip.json``
and ``.png``. Exit status 0 when every run's signed POST median (httpx) is under 1 ms.

Usage: ``python bench/simulator_roundtrip.py [--runs 5] [-n 1000]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

sys.path.insert(0, str(ROOT))

from order_execution.exchange.signing import sign  # noqa: E402
from order_execution.launcher.launch import Launcher  # noqa: E402
from order_execution.launcher.processes import ManagedProcess, free_port  # noqa: E402


def _start(port: int, key: str, secret: str, log_dir: Path) -> ManagedProcess:
    """The simulator with prices frozen and rate limits out of the way of the measurement."""
    unlimited = (
        "--weight-limit",
        "100000000",
        "--orders-per-10s",
        "100000000",
        "--orders-per-minute",
        "100000000",
    )
    # Stopped by the caller; started from a thread that may end first, so it does not die with it.
    launcher = Launcher(log_dir, base_env={"PYTHONPATH": str(ROOT)}, cwd=ROOT, die_with_parent=False)
    return launcher.simulator(port, key, secret, "--walk-interval-ms", "0", *unlimited)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _signed(
    client: httpx.Client, key: str, secret: str, method: str, path: str, query: str
) -> httpx.Response:
    query = f"{query}&timestamp={int(time.time() * 1000)}"
    return client.request(
        method, f"{path}?{query}&signature={sign(secret, query)}", headers={"X-MBX-APIKEY": key}
    )


class RawClient:
    """A minimal keep-alive HTTP/1.1 client on one socket: isolates the simulator's share of the latency."""

    def __init__(self, port: int) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port))
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf = b""

    def request(self, method: str, target: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """Send one request with an empty body; return (status, body)."""
        lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Content-Length: 0"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self._sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        while b"\r\n\r\n" not in self._buf:
            self._buf += self._sock.recv(65536)
        head, _, rest = self._buf.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            rest += self._sock.recv(65536)
        self._buf = rest[length:]
        return int(head.split(b" ", 2)[1]), rest[:length]

    def close(self) -> None:
        self._sock.close()


def run_raw(raw: RawClient, key: str, secret: str, n: int, run: int) -> dict[str, list[float]]:
    """Like run_once, with the raw socket client."""
    base: list[float] = []
    post: list[float] = []
    delete: list[float] = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        status, _ = raw.request("GET", "/fapi/v1/time")
        base.append((time.perf_counter_ns() - t0) / 1000)
        assert status == 200
    headers = {"X-MBX-APIKEY": key}
    for i in range(n):
        cid = f"raw-{run}-{i}"
        t0 = time.perf_counter_ns()
        q = (
            f"symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.010&price=40000"
            f"&newClientOrderId={cid}&timestamp={int(time.time() * 1000)}"
        )
        status, body = raw.request("POST", f"/fapi/v1/order?{q}&signature={sign(secret, q)}", headers)
        t1 = time.perf_counter_ns()
        assert status == 200, body
        q = f"symbol=BTCUSDT&origClientOrderId={cid}&timestamp={int(time.time() * 1000)}"
        status, body = raw.request("DELETE", f"/fapi/v1/order?{q}&signature={sign(secret, q)}", headers)
        t2 = time.perf_counter_ns()
        assert status == 200, body
        post.append((t1 - t0) / 1000)
        delete.append((t2 - t1) / 1000)
    return {"raw_baseline_get_time": base, "raw_signed_post_order": post, "raw_signed_delete_order": delete}


def run_once(client: httpx.Client, key: str, secret: str, n: int, run: int) -> dict[str, list[float]]:
    """One run: n baseline GETs, then n POST+DELETE order round trips; latencies in microseconds."""
    base: list[float] = []
    post: list[float] = []
    delete: list[float] = []
    pair: list[float] = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        r = client.get("/fapi/v1/time")
        base.append((time.perf_counter_ns() - t0) / 1000)
        assert r.status_code == 200
    for i in range(n):
        cid = f"bench-{run}-{i}"
        t0 = time.perf_counter_ns()
        r = _signed(
            client,
            key,
            secret,
            "POST",
            "/fapi/v1/order",
            f"symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.010&price=40000"
            f"&newClientOrderId={cid}",
        )
        t1 = time.perf_counter_ns()
        assert r.status_code == 200, r.text
        r = _signed(
            client, key, secret, "DELETE", "/fapi/v1/order", f"symbol=BTCUSDT&origClientOrderId={cid}"
        )
        t2 = time.perf_counter_ns()
        assert r.status_code == 200, r.text
        post.append((t1 - t0) / 1000)
        delete.append((t2 - t1) / 1000)
        pair.append((t2 - t0) / 1000)
    return {
        "baseline_get_time": base,
        "signed_post_order": post,
        "signed_delete_order": delete,
        "post_then_delete": pair,
    }


def _plot(runs: list[dict[str, list[float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(runs[0])
    fig, ax = plt.subplots(figsize=(10, 5))
    data, labels = [], []
    for kind in kinds:
        for i, run in enumerate(runs):
            data.append(run[kind])
            labels.append(f"{kind}\nrun {i + 1}")
    ax.boxplot(data, showfliers=False)
    ax.set_xticks(range(1, len(labels) + 1), labels, rotation=90, fontsize=6)
    ax.set_ylabel("latency (µs)")
    ax.axhline(1000, color="red", linestyle="--", linewidth=0.8, label="1 ms target")
    ax.set_title("Simulator round trips on loopback (httpx keep-alive client)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return 0 if the signed POST median is under 1 ms in every run, else 1."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("-n", type=int, default=1000, help="round trips per run")
    parser.add_argument("--warmup", type=int, default=300)
    args = parser.parse_args(argv)
    key, secret = secrets.token_hex(32), secrets.token_hex(32)
    port = free_port()
    log_dir = Path(tempfile.mkdtemp(prefix="bench-sim-"))
    sim = _start(port, key, secret, log_dir)
    try:
        limits = httpx.Limits(max_keepalive_connections=1, max_connections=1)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=10) as client:
            raw = RawClient(port)
            run_once(client, key, secret, args.warmup, 0)
            run_raw(raw, key, secret, args.warmup, 0)
            runs = []
            for i in range(args.runs):
                run = run_once(client, key, secret, args.n, i + 1)
                run.update(run_raw(raw, key, secret, args.n, i + 1))
                runs.append(run)
            raw.close()
    finally:
        sim.stop()
        shutil.rmtree(log_dir, ignore_errors=True)
    rows: list[dict[str, Any]] = []
    print(f"{'run':>3}  {'measure':<22} {'median µs':>10} {'p99 µs':>9} {'x baseline':>10}")
    for i, run in enumerate(runs, 1):
        for kind, values in run.items():
            base = statistics.median(
                run["raw_baseline_get_time" if kind.startswith("raw") else "baseline_get_time"]
            )
            med, p99 = statistics.median(values), _pct(values, 0.99)
            rows.append(
                {
                    "run": i,
                    "measure": kind,
                    "n": len(values),
                    "median_us": round(med, 1),
                    "p99_us": round(p99, 1),
                    "ratio_to_baseline": round(med / base, 2),
                }
            )
            print(f"{i:>3}  {kind:<22} {med:>10.1f} {p99:>9.1f} {med / base:>10.2f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": "simulator_roundtrip",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "n_per_run": args.n,
        "runs": rows,
    }
    (RESULTS / "simulator_roundtrip.json").write_text(json.dumps(doc, indent=2) + "\n")
    _plot(runs, RESULTS / "simulator_roundtrip.png")
    print(f"wrote {RESULTS / 'simulator_roundtrip.json'} and {RESULTS / 'simulator_roundtrip.png'}")
    worst = max(r["median_us"] for r in rows if r["measure"] == "signed_post_order")
    return 0 if worst < 1000 else 1


if __name__ == "__main__":
    sys.exit(main())
