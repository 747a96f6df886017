"""POST /v1/classify latency and throughput: one client, then N concurrent clients.

    python bench/api_bench.py [--requests 60] [--concurrency 8] [--size 640x480]

Starts `linewatch serve` as its own process (SQLite in a temporary folder, a token,
the shipped model) and sends JPEG uploads over HTTP with httpx, one image per request.
Its section of bench/RESULTS.md lies between the `<!-- api-bench -->` markers (placed
before the report bench's section, which runs to the end of the file)."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
from results_md import write_section

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-token"


def upload(size: tuple[int, int]) -> bytes:
    rng = np.random.default_rng(0)
    image = np.full((size[1], size[0], 3), 128, np.uint8)
    image = np.clip(image + rng.normal(0, 20, image.shape), 0, 255).astype(np.uint8)
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def start_server(folder: Path, port: int, threads: int) -> subprocess.Popen:  # type: ignore[type-arg]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINEWATCH_")}
    env |= {
        "LINEWATCH_DATABASE_URL": f"sqlite:///{folder / 'bench.db'}",
        "LINEWATCH_API__TOKEN": TOKEN,
        "LINEWATCH_API__THREADS": str(threads),
        "LINEWATCH_LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "linewatch.cli", "serve", "--port", str(port)]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_ready(base: str, data: bytes) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if classify(httpx.Client(base_url=base), data) > 0:
                return
        except httpx.HTTPError:
            time.sleep(0.5)
    raise SystemExit("linewatch serve did not answer within 120 s")


def classify(client: httpx.Client, data: bytes) -> float:
    start = time.perf_counter()
    response = client.post(
        "/v1/classify",
        headers={"Authorization": f"Bearer {TOKEN}"},
        files={"file": ("part.jpg", data, "image/jpeg")},
        timeout=60,
    )
    response.raise_for_status()
    return time.perf_counter() - start


def run_clients(base: str, data: bytes, clients: int, requests: int) -> tuple[list[float], float]:
    latencies: list[float] = []
    lock = threading.Lock()

    def worker(count: int) -> None:
        with httpx.Client(base_url=base) as client:
            for _ in range(count):
                seconds = classify(client, data)
                with lock:
                    latencies.append(seconds)

    per_client = max(1, requests // clients)
    threads = [threading.Thread(target=worker, args=(per_client,)) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, time.perf_counter() - start


def row(name: str, latencies: list[float], wall: float) -> str:
    ms = sorted(s * 1000 for s in latencies)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return (
        f"| {name} | {len(ms)} | {statistics.median(ms):.0f} ms | {p95:.0f} ms | "
        f"{len(ms) / wall:.1f} img/s |"
    )


def section(args: argparse.Namespace, rows: list[str]) -> str:
    cores = os.cpu_count()
    return "\n".join(
        [
            "## POST /v1/classify (HTTP API)",
            "",
            f"Run: `python bench/api_bench.py --requests {args.requests} --concurrency "
            f"{args.concurrency} --size {args.size}` on "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {cores} cores shared with "
            f"other work (load average {args.load:.1f} at start), CPU predictor. One JPEG per "
            "request "
            f"({args.size}, {len(upload(_size(args.size))) // 1000} kB), shipped model, "
            f"`api.threads` {args.threads}; latency is the client's (upload, decode, "
            "preprocess, predict, answer).",
            "",
            "| clients | requests | p50 | p95 | throughput |",
            "|---|---|---|---|---|",
            *rows,
            "",
            "- One predictor per `serve` process, its calls serialised, on 2 shared cores: 8",
            "  concurrent clients get about one client's throughput (upload and decode overlap",
            "  the predictor, but compete for the same cores) and queue for it, so latency grows",
            "  ~8x. Several images in one request share a batch; more throughput takes more",
            "  `serve` processes on more cores (or a GPU).",
        ]
    )


def _size(text: str) -> tuple[int, int]:
    width, height = text.lower().split("x")
    return int(width), int(height)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--threads", type=int, default=1, help="api.threads of the server")
    parser.add_argument("--port", type=int, default=18471)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS.md")
    args = parser.parse_args()
    args.load = os.getloadavg()[0]
    data = upload(_size(args.size))
    base = f"http://127.0.0.1:{args.port}"
    with tempfile.TemporaryDirectory() as folder:
        server = start_server(Path(folder), args.port, args.threads)
        try:
            wait_ready(base, data)
            run_clients(base, data, 1, 5)  # warm-up
            rows = []
            for clients in (1, args.concurrency):
                latencies, wall = run_clients(base, data, clients, args.requests)
                rows.append(row(str(clients), latencies, wall))
                print(rows[-1], flush=True)
        finally:
            server.terminate()
            server.wait(30)
    write_section(args.out, name="api-bench", body=section(args, rows), before="part-report-bench")
    return 0


if __name__ == "__main__":
    sys.exit(main())
