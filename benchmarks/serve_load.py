"""Loopback load test of ``fusent serve``: starts the server as a subprocess on 127.0.0.1, sends a bounded number
of multipart text + image requests (real MVSA posts) at a fixed concurrency, then stops it.

Prints responses by status (the target: zero 5xx), latency p50/p95/p99, requests/s, and the server's RSS at start,
middle and end (memory must stay flat). Traffic goes to 127.0.0.1 only; the run ends after ``--requests`` or
``--max-seconds``, whichever comes first.

    .venv/bin/python benchmarks/serve_load.py --checkpoint runs/mvsa/checkpoint [--requests 2000]
        [--concurrency 100] [--workers 1] [--threads 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predict_latency import DEFAULT_CHECKPOINT, DEFAULT_DATA, mvsa_posts, percentile  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def run_load(url: str, posts: list[dict], args: argparse.Namespace, server_pid: int) -> None:
    import httpx
    import psutil

    server = psutil.Process(server_pid)
    bodies = [(p["text"], p["image"].read_bytes()) for p in posts]
    statuses: Counter[int | str] = Counter()
    latencies: list[float] = []
    rss: list[tuple[int, float]] = [(0, server.memory_info().rss / 2**20)]
    marks = {args.requests // 2, args.requests}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(args.requests):
        queue.put_nowait(i)
    deadline = time.perf_counter() + args.max_seconds
    done = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal done
        while not queue.empty() and time.perf_counter() < deadline:
            i = queue.get_nowait()
            text, image = bodies[i % len(bodies)]
            start = time.perf_counter()
            try:
                r = await client.post(url, data={"text": text}, files={"image": ("post.jpg", image, "image/jpeg")})
                statuses[r.status_code] += 1
            except httpx.HTTPError as exc:
                statuses[type(exc).__name__] += 1
            latencies.append((time.perf_counter() - start) * 1000)
            done += 1
            if done in marks:
                rss.append((done, server.memory_info().rss / 2**20))

    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    start = time.perf_counter()
    async with httpx.AsyncClient(timeout=args.client_timeout, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(args.concurrency)))
    seconds = time.perf_counter() - start
    if done not in marks:
        rss.append((done, server.memory_info().rss / 2**20))

    five = sum(n for s, n in statuses.items() if isinstance(s, int) and s >= 500)
    print(f"{done} requests at concurrency {args.concurrency} in {seconds:.1f} s: {done / seconds:.1f} requests/s")
    print(f"responses: {dict(sorted(statuses.items(), key=str))}; 5xx: {five}")
    print(
        f"latency: p50 {statistics.median(latencies):.0f} ms, p95 {percentile(latencies, 0.95):.0f} ms, "
        f"p99 {percentile(latencies, 0.99):.0f} ms, max {max(latencies):.0f} ms"
    )
    print("server RSS: " + ", ".join(f"{mb:.0f} MB after {n} requests" for n, mb in rss))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--max-seconds", type=float, default=900, help="Stop sending after this long.")
    parser.add_argument("--client-timeout", type=float, default=120)
    parser.add_argument("--workers", type=int, default=1, help="fusent serve --workers")
    parser.add_argument("--threads", type=int, default=2, help="fusent serve --threads")
    parser.add_argument("--serve-arg", action="append", default=[], help="Extra fusent serve option (repeatable).")
    args = parser.parse_args()
    if not (args.checkpoint / "config.json").exists() or not (args.data / "data").is_dir():
        print(f"skipped: need a checkpoint at {args.checkpoint} and MVSA data at {args.data}", file=sys.stderr)
        return

    import httpx

    port = free_port()
    command = [sys.executable, "-m", "fusent.cli", "serve", str(args.checkpoint), "--port", str(port)]
    command += ["--workers", str(args.workers), "--threads", str(args.threads), "--device", "cpu", *args.serve_arg]
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(600):
            if server.poll() is not None:
                raise SystemExit(f"server exited: {server.stderr.read() if server.stderr else ''}")
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise SystemExit("server did not answer /health within 2 minutes")
        posts = mvsa_posts(args.data, 200)
        asyncio.run(run_load(f"{base}/predict", posts, args, server.pid))
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
