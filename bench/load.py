"""Concurrent load on the app: N gradio_client clients upload a clip and ask for a grid, over and over.

    python bench/load.py                         # N = 1, 4, 16; 40 s each; settings as the app's defaults
    python bench/load.py --clients 1 4 16 --seconds 40 --concurrency 2 --torch-threads 1

Starts `python app.py` on a free loopback port (training off, the bundled weights), waits for it, then for
each N runs N client threads for a bounded time (each: upload an example clip -> /paint with 9 images ->
download the gallery). Prints throughput (requests/s), p50/p95 latency and errors per N as a markdown table.
Loopback only, at most 32 clients, at most 300 s per N.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "assets" / "examples").glob("*.ogg"))
MAX_CLIENTS, MAX_SECONDS = 32, 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(port: int, concurrency: int, torch_threads: int, weights: str) -> subprocess.Popen:
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "MVNET_ENABLE_TRAINING": "0", "MVNET_WEIGHTS": weights, "MVNET_CONCURRENCY": str(concurrency),
           **({"MVNET_TORCH_THREADS": str(torch_threads)} if torch_threads else {})}
    return subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def wait_ready(url: str, server: subprocess.Popen, timeout: float = 300):
    from gradio_client import Client

    deadline = time.time() + timeout
    while time.time() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"app.py exited: {server.stderr.read()[-2000:]}")
        try:
            return Client(url, verbose=False)
        except Exception:
            time.sleep(1)
    raise RuntimeError("app.py did not answer in time")


def one_client(url: str, stop_at: float, index: int, latencies: list, errors: list) -> None:
    from gradio_client import Client, handle_file

    try:
        client = Client(url, verbose=False)
    except Exception as error:
        errors.append(f"connect: {error}")
        return
    k = index
    while time.time() < stop_at:
        clip = EXAMPLES[k % len(EXAMPLES)]
        k += 1
        started = time.perf_counter()
        try:
            gallery = client.predict(handle_file(str(clip)), 9, k % 1000, api_name="/paint")[3]
            if len(gallery) != 9:
                raise RuntimeError(f"{len(gallery)} images")
            latencies.append(time.perf_counter() - started)
        except Exception as error:
            errors.append(f"{type(error).__name__}: {error}"[:200])


def run_level(url: str, clients: int, seconds: float) -> dict:
    latencies, errors = [], []
    started = time.perf_counter()
    stop_at = time.time() + seconds
    threads = [threading.Thread(target=one_client, args=(url, stop_at, i, latencies, errors)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(MAX_SECONDS + 120)
    wall = time.perf_counter() - started  # includes the requests still running at the deadline
    ordered = sorted(latencies)

    def pct(q):
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")

    return {"clients": clients, "requests": len(latencies), "errors": len(errors), "wall": wall,
            "throughput": len(latencies) / wall, "p50": pct(0.50), "p95": pct(0.95),
            "mean": statistics.fmean(latencies) if latencies else float("nan"), "first_errors": errors[:3]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--seconds", type=float, default=40.0, help="load time per N (requests running at the "
                        "end are waited for)")
    parser.add_argument("--concurrency", type=int, default=2, help="MVNET_CONCURRENCY for the app")
    parser.add_argument("--torch-threads", type=int, default=0,
                        help="MVNET_TORCH_THREADS (0: the app's default, cores // concurrency)")
    parser.add_argument("--weights", default=str(ROOT / "weights"))
    args = parser.parse_args()
    if any(not 1 <= n <= MAX_CLIENTS for n in args.clients) or not 0 < args.seconds <= MAX_SECONDS:
        parser.error(f"clients 1-{MAX_CLIENTS}, seconds up to {MAX_SECONDS}")
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    server = start_app(port, args.concurrency, args.torch_threads, args.weights)
    try:
        warm = wait_ready(url, server)
        from gradio_client import handle_file

        warm.predict(handle_file(str(EXAMPLES[0])), 9, 0, api_name="/paint")
        print(f"app: concurrency {args.concurrency}, torch threads {args.torch_threads or 'app default'}, "
              f"{os.cpu_count()} cores; {args.seconds:.0f} s per level; /paint with 9 images", flush=True)
        print("| clients | requests | errors | throughput (req/s) | p50 (s) | p95 (s) | mean (s) |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for n in args.clients:
            r = run_level(url, n, args.seconds)
            print(f"| {n} | {r['requests']} | {r['errors']} | {r['throughput']:.2f} | {r['p50']:.2f} | "
                  f"{r['p95']:.2f} | {r['mean']:.2f} |", flush=True)
            for error in r["first_errors"]:
                print(f"    error: {error}", flush=True)
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
