"""Cold start and per-request latency of the MVNet app.

    python bench/app_latency.py [--weights weights] [--requests 10]

Cold start = from spawning `python app.py` to the first answered /paint request (imports, model load,
warm-up, server start, one paint). Then sequential /paint, /map_click and /era_paint round trips through
gradio_client (upload, queue, compute, image download), and the compute time the app reports itself.
"""

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--weights", default=str(ROOT / "weights"))
    parser.add_argument("--requests", type=int, default=10)
    args = parser.parse_args()
    from gradio_client import Client, handle_file

    port = free_port()
    env = {**os.environ, "MVNET_WEIGHTS": args.weights, "GRADIO_SERVER_PORT": str(port)}
    example = handle_file(str(ROOT / "assets" / "examples" / "baroque.ogg"))
    started = time.perf_counter()
    server = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        while True:
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
                client.predict(example, 9, 0, api_name="/paint")
                break
            except Exception:
                if server.poll() is not None:
                    raise SystemExit(f"app.py exited: {server.stderr.read()[-2000:]}") from None
                time.sleep(0.2)
        cold = time.perf_counter() - started
        print(f"cold start (spawn -> first /paint answered): {cold:.1f} s")
        for name, call in [
            ("/paint (8.9 s clip, 9 images)", lambda: client.predict(example, 9, 0, api_name="/paint")),
            ("/paint (26.7 s clip, 3 windows)", lambda: client.predict(
                handle_file(str(ROOT / "assets" / "examples" / "classical_long.ogg")), 9, 0, api_name="/paint")),
            ("/map_click (9 images)", lambda: client.predict(320, 250, "Nearest reference clip", 9, 0,
                                                             api_name="/map_click")),
            ("/era_paint (9 images)", lambda: client.predict("baroque", 9, 0, api_name="/era_paint")),
        ]:
            times, inside = [], []
            for _ in range(args.requests):
                t = time.perf_counter()
                result = call()
                times.append(time.perf_counter() - t)
                match = re.search(r"took (\d+\.\d+) s\.", str(result[-1]) if not isinstance(result, str) else result)
                if match:
                    inside.append(float(match.group(1)))
            line = f"{name}: median {statistics.median(times):.2f} s, max {max(times):.2f} s round trip"
            if inside:
                line += f"; app compute median {statistics.median(inside):.2f} s"
            print(line)
        # Four visitors at once (the queue runs two requests at a time).
        from concurrent.futures import ThreadPoolExecutor

        def visitor(_):
            own = Client(f"http://127.0.0.1:{port}/", verbose=False)
            spans = []
            for _ in range(3):
                t = time.perf_counter()
                own.predict(example, 9, 0, api_name="/paint")
                spans.append(time.perf_counter() - t)
            return spans

        t = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            spans = [x for result in pool.map(visitor, range(4)) for x in result]
        wall = time.perf_counter() - t
        print(f"4 concurrent visitors x 3 /paint: median {statistics.median(spans):.2f} s, max {max(spans):.2f} s "
              f"per request; {len(spans) / wall:.1f} requests/s")
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
