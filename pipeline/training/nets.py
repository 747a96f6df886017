"""Classification networks written with paddle.nn (no hub downloads).

PP-LCNet (Cui et al., 2021) at scales 0.25 / 0.5 / 1.0 and MobileNetV3-small
(Howard et al., 2019), both ending in a linear classifier over `num_classes`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import paddle
from paddle import nn

from linewatch.pipeline.errors import LinewatchError
from linewatch.pipeline.training import ARCHITECTURES, LITE_ARCHITECTURES


def _divisible(value: float, divisor: int = 8) -> int:
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class ConvBN(nn.Sequential):
    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        stride: int = 1,
        groups: int = 1,
        act: type[nn.Layer] | None = nn.Hardswish,
    ) -> None:
        layers: list[nn.Layer] = [
            nn.Conv2D(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias_attr=False),
            nn.BatchNorm2D(cout),
        ]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)


class SqueezeExcite(nn.Layer):
    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = _divisible(channels / reduction)
        self.pool = nn.AdaptiveAvgPool2D(1)
        self.reduce = nn.Conv2D(channels, hidden, 1)
        self.expand = nn.Conv2D(hidden, channels, 1)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        scale = nn.functional.relu(self.reduce(self.pool(x)))
        return x * nn.functional.hardsigmoid(self.expand(scale))


class DepthwiseSeparable(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, use_se: bool) -> None:
        layers: list[nn.Layer] = [ConvBN(cin, cin, kernel, stride, groups=cin)]
        if use_se:
            layers.append(SqueezeExcite(cin))
        layers.append(ConvBN(cin, cout, 1))
        super().__init__(*layers)


# (kernel, out channels at scale 1, stride, squeeze-excite)
LCNET_BLOCKS = [
    [(3, 64, 1, False)],
    [(3, 128, 2, False), (3, 128, 1, False)],
    [(3, 256, 2, False), (3, 256, 1, False)],
    [(3, 512, 2, False)] + [(5, 512, 1, False)] * 5,
    [(5, 1024, 2, True), (5, 1024, 1, True)],
]


class PPLCNet(nn.Layer):
    def __init__(
        self, scale: float, num_classes: int, head_channels: int = 1280, dropout: float = 0.2
    ) -> None:
        super().__init__()
        channels = _divisible(16 * scale)
        layers: list[nn.Layer] = [ConvBN(3, channels, 3, 2)]
        for stage in LCNET_BLOCKS:
            for kernel, width, stride, use_se in stage:
                out = _divisible(width * scale)
                layers.append(DepthwiseSeparable(channels, out, kernel, stride, use_se))
                channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2D(1)
        self.head = nn.Sequential(
            nn.Conv2D(channels, head_channels, 1), nn.Hardswish(), nn.Dropout(dropout)
        )
        self.classifier = nn.Linear(head_channels, num_classes)
        # Training-only head: per-cell classes at stride 16, supervised by defect masks.
        self.cell_head = nn.Conv2D(_divisible(LCNET_BLOCKS[3][-1][1] * scale), num_classes, 1)
        self.cell_stage = len(layers) - len(LCNET_BLOCKS[-1])

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self._classify(self.features(x))

    def forward_with_cells(self, x: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
        """Class logits [N, C] and per-cell class logits [N, C, H/16, W/16]."""
        layers = list(self.features.children())
        for layer in layers[: self.cell_stage]:
            x = layer(x)
        cells = self.cell_head(x)
        for layer in layers[self.cell_stage :]:
            x = layer(x)
        return self._classify(x), cells

    def stage_end(self, stages: int) -> int:
        """The index in `features` after the stem and the first `stages` stages."""
        return 1 + sum(len(stage) for stage in LCNET_BLOCKS[:stages])

    def trunk(self, stages: int) -> nn.Layer:
        """The stem and the first `stages` stages, as one layer (shares the weights)."""
        return nn.Sequential(*list(self.features.children())[: self.stage_end(stages)])

    def forward_from(self, x: paddle.Tensor, stages: int) -> paddle.Tensor:
        """Class logits from the output of `trunk(stages)`."""
        for layer in list(self.features.children())[self.stage_end(stages) :]:
            x = layer(x)
        return self._classify(x)

    def forward_with_features(self, x: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
        """Class logits and the pooled features the classifier reads [N, head_channels]."""
        pooled = paddle.flatten(self.head(self.pool(self.features(x))), 1)
        return self.classifier(pooled), pooled

    def _classify(self, features: paddle.Tensor) -> paddle.Tensor:
        x = self.head(self.pool(features))
        return self.classifier(paddle.flatten(x, 1))


class InvertedResidual(nn.Layer):
    def __init__(
        self,
        cin: int,
        hidden: int,
        cout: int,
        kernel: int,
        stride: int,
        use_se: bool,
        act: type[nn.Layer],
    ) -> None:
        super().__init__()
        layers: list[nn.Layer] = []
        if hidden != cin:
            layers.append(ConvBN(cin, hidden, 1, act=act))
        layers.append(ConvBN(hidden, hidden, kernel, stride, groups=hidden, act=act))
        if use_se:
            layers.append(SqueezeExcite(hidden))
        layers.append(ConvBN(hidden, cout, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        out = self.block(x)
        return x + out if self.residual else out


# (kernel, expansion, out, squeeze-excite, activation, stride)
MOBILENETV3_SMALL = [
    (3, 16, 16, True, nn.ReLU, 2),
    (3, 72, 24, False, nn.ReLU, 2),
    (3, 88, 24, False, nn.ReLU, 1),
    (5, 96, 40, True, nn.Hardswish, 2),
    (5, 240, 40, True, nn.Hardswish, 1),
    (5, 240, 40, True, nn.Hardswish, 1),
    (5, 120, 48, True, nn.Hardswish, 1),
    (5, 144, 48, True, nn.Hardswish, 1),
    (5, 288, 96, True, nn.Hardswish, 2),
    (5, 576, 96, True, nn.Hardswish, 1),
    (5, 576, 96, True, nn.Hardswish, 1),
]


class MobileNetV3Small(nn.Layer):
    def __init__(self, num_classes: int, dropout: float = 0.2) -> None:
        super().__init__()
        layers: list[nn.Layer] = [ConvBN(3, 16, 3, 2)]
        channels = 16
        for kernel, hidden, out, use_se, act, stride in MOBILENETV3_SMALL:
            layers.append(InvertedResidual(channels, hidden, out, kernel, stride, use_se, act))
            channels = out
        layers.append(ConvBN(channels, 576, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2D(1)
        self.head = nn.Sequential(nn.Conv2D(576, 1024, 1), nn.Hardswish(), nn.Dropout(dropout))
        self.classifier = nn.Linear(1024, num_classes)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.forward_with_features(x)[0]

    def forward_with_features(self, x: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
        """Class logits and the pooled features the classifier reads [N, 1024]."""
        pooled = paddle.flatten(self.head(self.pool(self.features(x))), 1)
        return self.classifier(pooled), pooled


def build_network(
    arch: str,
    num_classes: int,
    finetune_from_block: int | None = None,
    cell_features: bool = False,
) -> nn.Layer:
    """A fresh network by name (see ARCHITECTURES), with the same parameter names every
    time, so optimizer checkpoints load into a new process or a new instance.
    `finetune_from_block`: an EfficientNet-Lite0 trunk trained from that block on;
    `cell_features`: a Lite0 head that also reads a mask-trained `CellHead`."""
    scales = {"PPLCNet_x0_25": 0.25, "PPLCNet_x0_5": 0.5, "PPLCNet_x1_0": 1.0}
    if arch in LITE_ARCHITECTURES:
        from linewatch.pipeline.training.efficientnet import TRUNKS, LiteTeacher

        with paddle.utils.unique_name.guard():
            return LiteTeacher(num_classes, TRUNKS[arch], finetune_from_block, cell_features)
    if cell_features:
        raise LinewatchError(f"cell features need an EfficientNet-Lite0 trunk, not {arch}")
    if arch not in (*scales, "MobileNetV3_small"):
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    with paddle.utils.unique_name.guard():
        if arch == "MobileNetV3_small":
            return MobileNetV3Small(num_classes)
        return PPLCNet(scales[arch], num_classes)


EMBEDDING_PREFIX = "embedding_"  # parameter names of an exported embedding head


def load_exported_weights(network: nn.Layer, folder: Path) -> int:
    """Warm start from an exported folder of the same architecture: the program's
    variables carry the names `build_network` gives (a training-only head, absent from
    the export, keeps its fresh weights; an exported embedding head, named
    `EMBEDDING_PREFIX`…, is not the network's). Returns the number of tensors loaded."""
    import os

    os.environ.setdefault("FLAGS_enable_pir_api", "0")
    paddle.enable_static()
    try:
        executor = paddle.static.Executor(paddle.CPUPlace())
        scope = paddle.static.Scope()
        with paddle.static.scope_guard(scope):
            program, _, _ = paddle.static.load_inference_model(str(folder / "inference"), executor)
            values = {
                var.name: np.array(scope.find_var(var.name).get_tensor())
                for var in program.list_vars()
                if var.persistable
                and var.name not in ("feed", "fetch")
                and not var.name.startswith(EMBEDDING_PREFIX)
            }
    finally:
        paddle.disable_static()
    state = {}
    for key, tensor in network.state_dict().items():
        value = values.get(tensor.name)
        if value is not None and tuple(value.shape) == tuple(tensor.shape):
            state[key] = value
    state.update(_by_creation_order(network, values, state))
    # buffers the network does not keep in its state (constants) the program stores too,
    # by count: their names (generated_tensor_N) depend on what the process built before
    in_state = {tensor.name for tensor in network.state_dict().values()}
    constants = [buffer for buffer in network.buffers() if buffer.name not in in_state]
    if len(state) < len(values) - len(constants):
        raise LinewatchError(
            f"{folder} does not fit this network: {len(state)} of {len(values)} tensors match"
        )
    network.set_state_dict(state)
    return len(state)


def _numbered(name: str) -> tuple[str, int]:
    stem, _, number = name.rpartition("_")
    return (stem, int(number)) if number.isdigit() else (name, -1)


def _by_creation_order(
    network: nn.Layer, values: dict[str, np.ndarray], matched: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Persistable buffers (a head's standardisation) whose generated names
    (eager_tmp_N) depend on what the exporting process made before: paired with the
    program's unclaimed tensors of the same stem in creation order, shape for shape."""
    claimed = {network.state_dict()[key].name for key in matched}
    unclaimed = sorted((_numbered(n), n) for n in values if n not in claimed)
    pending = sorted(
        (_numbered(tensor.name), key, tuple(tensor.shape))
        for key, tensor in network.state_dict().items()
        if key not in matched
    )
    paired = {}
    for (stem, _), key, shape in pending:
        for index, ((other_stem, _), name) in enumerate(unclaimed):
            if other_stem == stem and tuple(values[name].shape) == shape:
                paired[key] = values[name]
                del unclaimed[index]
                break
    return paired
