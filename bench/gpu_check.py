"""GPU check: predictor img/s of the shipped models, FP32 and TensorRT FP16, at batch
1..128, and an inference worker fed by N simulated cameras; writes its own section of
bench/RESULTS.md. Run it through `bench/gpu_check.sh` (which brings paddle into a venv).

    python bench/gpu_check.py                          # GPU (fails clearly without one)
    python bench/gpu_check.py --device cpu --quick     # the CPU fallback path (tests)
    python bench/gpu_check.py --engine onnx            # ONNX Runtime, where paddle cannot be had

Every figure names the engine that produced it: Paddle Inference GPU, Paddle Inference
GPU + TensorRT FP16, Paddle Inference CPU (oneDNN), or ONNX Runtime (CUDA / TensorRT /
CPU execution provider) on the same model converted by paddle2onnx.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from results_md import write_section

ROOT = Path(__file__).resolve().parent.parent
MODELS = (ROOT / "models" / "linewatch-tile", ROOT / "models" / "linewatch-tile-teacher")
BATCHES = (1, 8, 32, 64, 128)
SECTION = "gpu-check"  # its part of RESULTS.md: between <!-- gpu-check --> and <!-- /gpu-check -->


@dataclass(frozen=True)
class Row:
    model: str
    engine: str
    rates: dict[int, float]  # batch -> img/s (nan: failed)
    note: str = ""


def log(message: str) -> None:
    print(f"[gpu-check {time.strftime('%H:%M:%S')}] {message}", flush=True)


def best_rate(run: Callable[[np.ndarray], object], batch: np.ndarray, seconds: float) -> float:
    run(batch)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or runs < 2:
        run(batch)
        runs += 1
    return len(batch) * runs / (time.perf_counter() - start)


def rates_of(run: Callable[[np.ndarray], object], size: int, args: argparse.Namespace) -> dict:
    rng = np.random.default_rng(0)
    out = {}
    for batch in args.batches:
        data = rng.normal(0, 1, (batch, 3, size, size)).astype(np.float32)
        out[batch] = best_rate(run, data, args.seconds)
    return out


# --- Paddle Inference -------------------------------------------------------------------


def paddle_status(device: str) -> str:
    """'' when paddle can run on `device`, else why not."""
    try:
        from linewatch.pipeline.inference.predictor import import_paddle

        paddle = import_paddle()
    except Exception as exc:  # ImportError, or a broken CUDA library at import
        return f"paddle does not import: {exc}"
    if device == "gpu":
        if not paddle.device.is_compiled_with_cuda():
            return f"paddle {paddle.__version__} is a CPU build"
        if paddle.device.cuda.device_count() < 1:
            return f"paddle {paddle.__version__} sees no CUDA device"
    return ""


def paddle_rows(model: Path, args: argparse.Namespace) -> list[Row]:
    from linewatch.pipeline.inference.classifier import Classifier

    modes = [(False, "Paddle Inference GPU FP32")] if args.device == "gpu" else []
    if args.device == "gpu" and not args.no_tensorrt:
        modes.append((True, "Paddle Inference GPU + TensorRT FP16"))
    if args.device == "cpu":
        modes = [(False, f"Paddle Inference CPU (oneDNN, {args.threads} threads)")]
    rows = []
    for tensorrt, engine in modes:
        log(f"{model.name}: {engine}")
        try:
            classifier = Classifier(
                model,
                threads=args.threads,
                device=args.device,
                tensorrt=tensorrt,
                max_batch=max(args.batches),
            )
            classifier.warm_up()
            size = classifier.preprocessor.output_size[0]
            rows.append(Row(model.name, engine, rates_of(classifier.infer, size, args)))
        except Exception as exc:  # a TensorRT build failure must not hide the FP32 figures
            rows.append(Row(model.name, engine, {}, f"failed: {str(exc).splitlines()[0][:160]}"))
    return rows


# --- ONNX Runtime fallback --------------------------------------------------------------


def onnx_rows(model: Path, args: argparse.Namespace, work: Path) -> list[Row]:
    """The same model converted by paddle2onnx and run by ONNX Runtime."""
    try:
        import onnxruntime
        import paddle2onnx
    except ImportError as exc:
        return [Row(model.name, "ONNX Runtime", {}, f"not installed: {exc}")]
    onnx_file = work / f"{model.name}.onnx"
    paddle2onnx.export(
        str(model / "inference.pdmodel"), str(model / "inference.pdiparams"), str(onnx_file)
    )
    available = onnxruntime.get_available_providers()
    wanted = [("CUDAExecutionProvider", "ONNX Runtime CUDA FP32")]
    if not args.no_tensorrt:
        trt = ("TensorrtExecutionProvider", {"trt_fp16_enable": True})
        wanted.insert(0, (trt, "ONNX Runtime TensorRT FP16"))
    if args.device == "cpu":
        wanted = [("CPUExecutionProvider", "ONNX Runtime CPU")]
    size = _onnx_size(model)
    rows = []
    for provider, engine in wanted:
        name = provider[0] if isinstance(provider, tuple) else provider
        if name not in available:
            rows.append(Row(model.name, engine, {}, f"{name} not available ({available})"))
            continue
        log(f"{model.name}: {engine}")
        session = onnxruntime.InferenceSession(str(onnx_file), providers=[provider])
        run = partial(_run_onnx, session, session.get_inputs()[0].name)
        rows.append(Row(model.name, engine, rates_of(run, size, args)))
    return rows


def _run_onnx(session, feed: str, batch: np.ndarray) -> object:  # type: ignore[no-untyped-def]
    return session.run(None, {feed: batch})


def _onnx_size(model: Path) -> int:
    import yaml

    config = yaml.safe_load((model / "inference.yml").read_text())
    return int(config["Global"]["image_size"])


# --- an inference worker fed by N cameras -----------------------------------------------


def worker_rows(args: argparse.Namespace, work: Path) -> list[tuple[str, str]]:
    """`linewatch worker infer` on the device, fed JPEG part views by N cameras at
    `--camera-fps` each for `--worker-s` seconds, then a backlog drained flat out."""
    from linewatch.pipeline.streams import broker
    from linewatch.pipeline.streams.embedded_redis import EmbeddedRedis

    with EmbeddedRedis(work / "redis") as redis:
        config = _worker_config(work, redis.url, args)
        client = broker.connect(redis.url)
        worker = _start_worker(config, work)
        try:
            _wait_ready(client, worker, args)
            views = _views(64)
            live = _feed_cameras(client, views, args)
            drained = _drain_backlog(client, views, args)
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    engine = "Paddle Inference GPU" if args.device == "gpu" else "Paddle Inference CPU"
    engine += " + TensorRT FP16" if args.worker_tensorrt and args.device == "gpu" else ""
    cams = f"{args.cameras} cameras x {args.camera_fps:g} views/s"
    return [
        (f"worker ({engine}), {cams}: views/s inferred", f"{live[0]:.0f}"),
        (f"worker, {cams}: capture->result p50 / p99", f"{live[1]:.0f} / {live[2]:.0f} ms"),
        (f"worker, {cams}: stale / not inferred", f"{live[3]} / {live[4]}"),
        (f"worker, backlog of {args.backlog} views drained flat out: views/s", f"{drained:.0f}"),
    ]


def _worker_config(work: Path, redis_url: str, args: argparse.Namespace) -> Path:
    import yaml

    settings = {
        "line": "gpucheck",
        "redis_url": redis_url,
        "data_dir": str(work / "data"),
        "database_url": f"sqlite:///{work / 'gpucheck.db'}",
        "cameras": [{"id": "cam1", "url": "unused.mp4"}],
        "inference": {
            "model_dir": str(args.worker_model),
            "device": args.device,
            "tensorrt": bool(args.worker_tensorrt and args.device == "gpu"),
            "max_batch": args.worker_batch,
            "max_wait_ms": 10,
            "threads": args.threads,
        },
    }
    path = work / "line.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def _start_worker(config: Path, work: Path) -> subprocess.Popen:
    command = [sys.executable, "-c", "import sys; from linewatch.cli import main; sys.exit(main())"]
    command += ["worker", "infer", "--config", str(config), "--id", "gpucheck"]
    env = {**os.environ, "LINEWATCH_LOG_LEVEL": "WARNING"}
    out = (work / "worker.log").open("w")
    return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)


def _wait_ready(client, worker: subprocess.Popen, args: argparse.Namespace) -> None:  # type: ignore[no-untyped-def]
    """Until the worker answers a first view (model loaded, every batch shape warm)."""
    deadline = time.time() + args.ready_s
    _send(client, [_message("warm", 0, _views(1)[0], time.time_ns())])
    while time.time() < deadline:
        if worker.poll() is not None:
            raise RuntimeError(f"the inference worker exited ({worker.returncode}); see its log")
        if client.xlen("lw:results:gpucheck"):
            client.delete("lw:results:gpucheck")
            return
        time.sleep(0.2)
    raise RuntimeError(f"the inference worker was not ready within {args.ready_s} s")


def _views(count: int) -> list[bytes]:
    from linewatch.pipeline.simulation.synthetic import LABELS, make_tile
    from linewatch.pipeline.video.codec import encode_image

    rng = np.random.default_rng(0)
    tiles = [make_tile(rng, LABELS[i % len(LABELS)], 224) for i in range(count)]
    return [encode_image(np.repeat(t[..., None], 3, axis=2), "jpeg") for t in tiles]


def _message(camera: str, seq: int, jpeg: bytes, capture_ts: int) -> dict:
    from linewatch.schemas.messages import FrameMessage

    return FrameMessage(camera, seq, seq / 5, capture_ts, capture_ts, 224, 224, "jpeg", jpeg, True)


def _send(client, messages: list) -> None:  # type: ignore[no-untyped-def]
    from linewatch.pipeline.streams import broker

    broker.add_to_streams(client, [("lw:frames:gpucheck", [m.encode() for m in messages], None)])


def _feed_cameras(client, views: list[bytes], args: argparse.Namespace) -> tuple:  # type: ignore[no-untyped-def]
    """Each camera sends one view every 1/fps s (phases spread) for --worker-s seconds."""
    period = 1.0 / args.camera_fps
    ticks = int(args.worker_s * args.camera_fps)
    start, sent = time.time(), 0
    for tick in range(ticks):
        for camera in range(args.cameras):
            due = start + tick * period + camera * period / args.cameras
            time.sleep(max(0.0, due - time.time()))
            _send(
                client, [_message(f"cam{camera}", tick, views[sent % len(views)], time.time_ns())]
            )
            sent += 1
    results = _collect(client, sent, timeout_s=10 + args.worker_s)
    ok = [r for r in results if r.status == "ok"]
    latency = [(r.infer_end_ts - r.capture_ts) / 1e6 for r in ok]
    span = (max(r.infer_end_ts for r in ok) - min(r.capture_ts for r in ok)) / 1e9 if ok else 1
    p50, p99 = np.percentile(latency, [50, 99]) if latency else (float("nan"),) * 2
    stale = sum(r.status == "stale" for r in results)
    return len(ok) / span, p50, p99, stale, sent - len(results)


def _drain_backlog(client, views: list[bytes], args: argparse.Namespace) -> float:  # type: ignore[no-untyped-def]
    client.delete("lw:results:gpucheck")
    now = time.time_ns()
    messages = [_message("backlog", i, views[i % len(views)], now) for i in range(args.backlog)]
    messages = [m.__class__(**{**m.__dict__, "live": False}) for m in messages]
    start = time.time()
    for begin in range(0, len(messages), 256):
        _send(client, messages[begin : begin + 256])
    results = _collect(client, len(messages), timeout_s=120)
    return len(results) / (time.time() - start)


def _collect(client, count: int, timeout_s: float) -> list:  # type: ignore[no-untyped-def]
    from linewatch.schemas.messages import ResultMessage

    deadline = time.time() + timeout_s
    while client.xlen("lw:results:gpucheck") < count and time.time() < deadline:
        time.sleep(0.05)
    entries = client.xrange("lw:results:gpucheck")
    return [ResultMessage.decode(fields) for _, fields in entries]


# --- the table --------------------------------------------------------------------------


def environment(args: argparse.Namespace) -> list[str]:
    lines = [
        f"Host: {platform.node()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average "
        + " ".join(f"{v:.2f}" for v in os.getloadavg()),
    ]
    if shutil.which("nvidia-smi"):
        query = "--query-gpu=name,driver_version,memory.total"
        gpu = subprocess.run(
            ["nvidia-smi", query, "--format=csv,noheader"], capture_output=True, text=True
        )
        lines.append(f"GPU: {gpu.stdout.strip() or gpu.stderr.strip()}")
    else:
        lines.append("GPU: none (nvidia-smi not found)")
    try:
        import paddle

        cuda = paddle.version.cuda() if paddle.device.is_compiled_with_cuda() else "no CUDA"
        lines.append(f"paddle {paddle.__version__} ({cuda})")
    except Exception:  # not installed, or broken: the engines below say what ran instead
        lines.append("paddle: not importable")
    return lines


def markdown(env: list[str], rows: list[Row], worker: list[tuple[str, str]], command: str) -> str:
    head = "| model | engine | " + " | ".join(f"b{b}" for b in BATCHES) + " | note |"
    lines = ["## GPU check (`bench/gpu_check.sh`)", "", f"Run: `{command}`  "]
    lines += [f"{line}  " for line in env]
    lines += ["", "Predictor img/s (preprocessed float32 input, best of a short loop):", ""]
    lines += [head, "|---|---|" + "---:|" * len(BATCHES) + "---|"]
    for row in rows:
        cells = " | ".join(_rate(row.rates.get(b)) for b in BATCHES)
        lines.append(f"| {row.model} | {row.engine} | {cells} | {row.note} |")
    if worker:
        lines += ["", "| inference worker | value |", "|---|---|"]
        lines += [f"| {name} | {value} |" for name, value in worker]
    return "\n".join(lines)


def _rate(value: float | None) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.0f}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("gpu", "cpu"), default="gpu")
    parser.add_argument("--engine", choices=("auto", "paddle", "onnx"), default="auto")
    parser.add_argument(
        "--models", nargs="+", type=Path, default=list(MODELS), help="the first feeds the worker"
    )
    parser.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    parser.add_argument("--seconds", type=float, default=1.0, help="timing loop per figure")
    parser.add_argument("--threads", type=int, default=2, help="CPU math threads (cpu)")
    parser.add_argument("--no-tensorrt", action="store_true")
    parser.add_argument("--cameras", type=int, default=30)
    parser.add_argument("--camera-fps", type=float, default=10.0, help="views/s per camera")
    parser.add_argument("--worker-s", type=float, default=20.0)
    parser.add_argument("--worker-batch", type=int, default=64)
    parser.add_argument("--worker-tensorrt", action="store_true")
    parser.add_argument("--backlog", type=int, default=3000)
    parser.add_argument("--ready-s", type=float, default=180.0)
    parser.add_argument("--no-worker", action="store_true")
    parser.add_argument("--quick", action="store_true", help="tiny run (tests, a first look)")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.batches, args.seconds, args.cameras = [1, 8], 0.2, 2
        args.camera_fps, args.worker_s, args.backlog, args.worker_batch = 5.0, 2.0, 64, 8
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    given = " ".join(argv if argv is not None else sys.argv[1:])
    command = os.environ.get("GPU_CHECK_COMMAND", f"python bench/gpu_check.py {given}")
    reason = paddle_status(args.device) if args.engine != "onnx" else "--engine onnx"
    use_paddle = args.engine == "paddle" or (args.engine == "auto" and not reason)
    if args.engine == "paddle" and reason:
        log(f"cannot use paddle: {reason}")
        return 2
    if not use_paddle:
        log(f"paddle unusable ({reason}); ONNX Runtime on the paddle2onnx-converted models")
    with tempfile.TemporaryDirectory(prefix="gpucheck-") as tmp:
        work = Path(tmp)
        models = [_copy(model, work / "models") for model in args.models]
        args.worker_model = models[0]
        rows: list[Row] = []
        for model in models:
            rows += paddle_rows(model, args) if use_paddle else onnx_rows(model, args, work)
        worker = [] if args.no_worker or not use_paddle else worker_rows(args, work)
        section = markdown(environment(args), rows, worker, command.strip())
    print(section)
    write_section(args.results, name=SECTION, body=section)
    log(f"wrote its section of {args.results}")
    return 0


def _copy(model: Path, folder: Path) -> Path:
    """A private copy: TensorRT writes its engine cache into the model folder."""
    target = folder / model.name
    shutil.copytree(model, target)
    return target


if __name__ == "__main__":
    sys.exit(main())
