"""How fast Paddle's dygraph trains EfficientNet-Lite0 on this CPU, side by side in one
run: the last stage alone (blocks 8-10, on cached 80x10x10 stage-4 maps, as a fine-tune
that reuses the frozen trunk's output would) and the whole trunk at the line's input.
This is why the shipped recipe trains heads on a frozen trunk (see the model card).

    python bench/finetune_speed.py              # batch 64, 160 px, 5 timed steps each
    python bench/finetune_speed.py --size 224 --steps 3

Each figure is forward + backward + AdamW on random input (the speed does not depend on
the pixels), after one warm-up step; the epoch time is for the shipped recipe's 68,720
line views (80 per training photo).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import paddle

import linewatch.pipeline.training  # noqa: F401  (paddle flags)
from linewatch.pipeline.training.efficientnet import EfficientNetLite0, PooledFeatures

RECIPE_VIEWS = 68_720


def step_seconds(layer: paddle.nn.Layer, batch: np.ndarray, steps: int) -> float:
    """Mean seconds of one training step (forward, backward, AdamW), after a warm-up."""
    layer.train()
    optimizer = paddle.optimizer.AdamW(parameters=layer.parameters(), learning_rate=1e-4)
    x = paddle.to_tensor(batch)
    for step in range(steps + 1):
        if step == 1:
            start = time.perf_counter()
        loss = (layer(x) ** 2).mean()
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=160, help="input size of the whole trunk")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    paddle.set_device("cpu")
    rng = np.random.default_rng(0)
    network = EfficientNetLite0()
    last_stage = paddle.nn.Sequential(*list(network._blocks)[8:11])
    stage_maps = rng.random((args.batch, 80, 10, 10), np.float32)
    photos = rng.random((args.batch, 3, args.size, args.size), np.float32)
    rows = [
        (
            "last stage (blocks 8-10) on stage-4 maps",
            step_seconds(last_stage, stage_maps, args.steps),
        ),
        (
            f"whole trunk at {args.size} px",
            step_seconds(PooledFeatures(network), photos, args.steps),
        ),
    ]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"dygraph training on CPU, batch {args.batch}, {args.steps} steps; {when}")
    for name, seconds in rows:
        rate = args.batch / seconds
        epoch_min = RECIPE_VIEWS / rate / 60
        print(
            f"{name:44s} {rate:7.1f} views/s  {epoch_min:6.1f} min per {RECIPE_VIEWS:,}-view epoch"
        )
    print(f"the last stage alone is {rows[1][1] / rows[0][1]:.2f}x as fast per view")


if __name__ == "__main__":
    main()
