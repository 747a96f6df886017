"""Frame mode against a hand-written single process, side by side in one run.

The same 640x480 H.264 file (synthetic tiles on a grey belt, one tile per frame) goes
through `linewatch run` in frame mode (`parts.method: none`: every frame a one-view
part: ingest, inference and sink processes, embedded Redis, SQLite) and through
`bench/loops.py`'s batched loop doing the same work in one process (decode → resize
to the model's input → batch 32 → predict → executemany + commit). Each is given its
best of `--rounds` (the machine is shared); prints frames/s of both and their ratio.

    python bench/frame_mode_bench.py [--frames 1500] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from line_figures import part_figures  # noqa: E402
from loops import run_loop  # noqa: E402

from linewatch.line import run_line  # noqa: E402
from linewatch.pipeline.config import FrameParts, Settings, load_settings  # noqa: E402
from linewatch.pipeline.inference.classifier import Classifier  # noqa: E402
from linewatch.pipeline.runtime import setup_logging  # noqa: E402
from linewatch.pipeline.simulation.synthetic import make_tile  # noqa: E402
from linewatch.pipeline.streams.embedded_redis import EmbeddedRedis  # noqa: E402
from linewatch.pipeline.video.video_writer import write_video  # noqa: E402
from linewatch.workers.ingest import model_view  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODEL_DIR = ROOT / "models" / "linewatch-tile"
WIDTH, HEIGHT, TILE = 640, 480, 224
LABELS = ("free", "free", "free", "crack", "free", "free", "blowhole", "free")


def frames(count: int, seed: int = 3) -> Iterator[np.ndarray]:
    """A tile per frame, centred on a grey belt, a defective one now and then."""
    rng = np.random.default_rng(seed)
    tiles = [np.repeat(make_tile(rng, label, TILE)[..., None], 3, axis=2) for label in LABELS]
    for index in range(count):
        frame = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
        x, y = (WIDTH - TILE) // 2 + index % 7 - 3, (HEIGHT - TILE) // 2
        frame[y : y + TILE, x : x + TILE] = tiles[index % len(tiles)]
        yield frame


def line_settings(work: Path, name: str, redis_url: str, video: Path) -> Settings:
    """Frame mode; LINEWATCH_* variables tune the rest (e.g. LINEWATCH_INFERENCE__THREADS)."""
    return load_settings(
        environ=None,
        overrides={
            "line": name,
            "redis_url": redis_url,
            "data_dir": str(work),
            "database_url": f"sqlite:///{work / (name + '.db')}",
            "cameras": [{"id": "cam1", "url": str(video), "live": False}],
        },
    )


def line_rate(video: Path, redis_url: str, work: Path, name: str) -> float:
    """Frames (one-view parts) per second, first capture to last verdict."""
    settings = line_settings(work, name, redis_url, video)
    run_line(settings)
    figures = part_figures(settings, live=False)
    return figures.parts_per_s


def loop_rate(video: Path, classifier: Classifier, db: Path) -> float:
    """The batched single process's frames per second (one-view parts, batch 32)."""
    figures = run_loop(
        video,
        classifier=classifier,
        parts=FrameParts(),
        view=model_view(MODEL_DIR, "bench"),
        db=db,
        batch_size=32,
    )
    return figures.parts_per_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1500)
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--rounds", type=int, default=2, help="best of this many each")
    args = parser.parse_args()
    os.environ.setdefault("LINEWATCH_LOG_LEVEL", "ERROR")  # not every NG frame
    setup_logging("bench")
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average {load}")
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis") as redis:
        work = Path(tmp)
        video = write_video(work / "frames.mp4", frames(args.frames), args.fps)
        classifier = Classifier(MODEL_DIR, max_batch=32)
        classifier.warm_up()
        lines, loops = [], []
        for round_ in range(args.rounds):
            lines.append(line_rate(video, redis.url, work, f"frames{round_}"))
            loops.append(loop_rate(video, classifier, work / "loop.db"))
            print(f"round {round_ + 1}: line {lines[-1]:.1f} / single process {loops[-1]:.1f}")
    line, loop = max(lines), max(loops)
    print(f"{args.frames} frames {WIDTH}x{HEIGHT} H.264, model {MODEL_DIR.name}")
    print(f"frame-mode line (linewatch run): {line:.1f} frames/s")
    print(f"hand-written single process (batch 32, executemany): {loop:.1f} frames/s")
    print(f"line / single process: {line / loop:.2f}x")
    print(f"load average after: {' / '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
