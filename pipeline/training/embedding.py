"""The embedding head: a small MLP from the features the classifier reads (a Lite0
head's standardised pooled taps) to the L2-normalised view embedding the gallery holds.
Trained by `linewatch train-embedding` (embedding_train.py); `linewatch export` puts it
in the graph as output 1 when the run folder has one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import paddle
from paddle import nn

from linewatch.pipeline.errors import LinewatchError
from linewatch.pipeline.training.nets import EMBEDDING_PREFIX

EMBEDDING_FILE = "embedding_head.pdparams"
EMBEDDING_CONFIG = "embedding.json"  # {features, size, hidden, keep, whiten, shrinkage} of a head
EMBED_DIR = "embedding"  # RUN/embedding/: taps cache, log, checkpoint, reports
HELD_OUT_FILE = "held_out_novelty.npz"  # part novelty of photos their fold head never saw
SOURCE_FILE = "source.json"  # {model, split, data}: a run made from an exported folder


def unit_rows(x: paddle.Tensor) -> paddle.Tensor:
    """Rows scaled to unit length, traceable to the legacy program format (paddle's
    normalize, sum and matmul do not trace to it in this paddle; mean and ** do)."""
    squares = paddle.mean(x * x, axis=1, keepdim=True) * x.shape[1]
    return x / (squares + 1e-12) ** 0.5


class EmbeddingHead(nn.Layer):
    """features -> hidden (ReLU) -> `size`, trained with ArcMargin. With `keep` > 0 the
    embedding is that output and the features' projection on their first `keep`
    principal axes, each of unit length, side by side [size + keep]: the cosine of two
    views is then the mean of the trained and the untrained cosines.

    With `whiten` the projection is centred and each axis scaled by 1 / sqrt(its variance
    + shrinkage), so the cosine of two views approximates their Mahalanobis distance
    under the training views' covariance (Lee et al. 2018); with `size` 0 there is no
    trained part and the embedding is that whitened projection alone (D = keep): the
    leave-one-class-out figures make it the default (MODEL_CARD "Gallery")."""

    def __init__(
        self,
        features: int,
        size: int = 128,
        hidden: int = 256,
        keep: int = 0,
        whiten: bool = False,
        shrinkage: float = 0.01,
    ) -> None:
        super().__init__()
        if not size and not keep:
            raise LinewatchError("an embedding head needs a trained part (size) or axes (keep)")
        self.size, self.keep, self.whiten, self.shrinkage = size, keep, whiten, shrinkage
        if size:
            self.net = nn.Sequential(
                nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, size)
            )
        if keep:
            # a Linear rather than a matmul: it traces to the legacy program format
            self.projection = nn.Linear(features, keep, bias_attr=False)
            self.projection.weight.stop_gradient = True
            if whiten:
                # the features' mean, subtracted before the projection (a bias after it
                # would cancel large whitened terms in float32)
                self.centre = self.create_parameter(
                    [features], default_initializer=nn.initializer.Constant(0.0)
                )
                self.centre.stop_gradient = True

    def fit_projection(self, features: np.ndarray) -> None:
        """The first `keep` principal axes of these features (training views), whitened
        with `whiten` (shrinkage: a fraction of the mean eigenvalue added to each)."""
        if not self.keep:
            return
        features = np.asarray(features, np.float64)
        mean = features.mean(axis=0)
        centred = features - mean
        _, singular, axes = np.linalg.svd(centred, full_matrices=False)
        weight = axes[: self.keep].T
        if self.whiten:
            variance = singular**2 / max(1, len(features) - 1)
            scale = 1.0 / np.sqrt(variance[: self.keep] + self.shrinkage * variance.mean())
            weight = weight * scale
            self.centre.set_value(mean.astype(np.float32))
        self.projection.weight.set_value(weight.astype(np.float32))

    def trained_parameters(self) -> list[paddle.Tensor]:
        return self.net.parameters() if self.size else []

    def forward(self, features: paddle.Tensor) -> paddle.Tensor:
        if not self.keep:
            return self.net(features)
        kept = self.projection(features - self.centre if self.whiten else features)
        if not self.size:
            return kept
        return paddle.concat([unit_rows(self.net(features)), unit_rows(kept)], axis=1)


def build_embedding_head(
    features: int,
    size: int = 128,
    hidden: int = 256,
    keep: int = 0,
    whiten: bool = False,
    shrinkage: float = 0.01,
) -> EmbeddingHead:
    """A fresh head whose parameter names start with EMBEDDING_PREFIX (never a network's)."""
    with paddle.utils.unique_name.guard(EMBEDDING_PREFIX):
        return EmbeddingHead(features, size, hidden, keep, whiten, shrinkage)


def load_embedding_head(run_dir: Path) -> EmbeddingHead | None:
    """The run's trained embedding head (eval mode), or None when it has none."""
    if not (run_dir / EMBEDDING_FILE).exists():
        return None
    shape = json.loads((run_dir / EMBEDDING_CONFIG).read_text())
    head = build_embedding_head(
        int(shape["features"]),
        int(shape["size"]),
        int(shape["hidden"]),
        int(shape.get("keep", 0)),
        bool(shape.get("whiten", False)),
        float(shape.get("shrinkage", 0.01)),
    )
    missing, unexpected = head.set_state_dict(paddle.load(str(run_dir / EMBEDDING_FILE)))
    if missing or unexpected:
        raise LinewatchError(
            f"{run_dir / EMBEDDING_FILE} does not fit its {EMBEDDING_CONFIG} (missing "
            f"{missing}, unexpected {unexpected}); retrain it with `linewatch train-embedding`"
        )
    head.eval()
    return head


def load_held_out(run_dir: Path) -> tuple[np.ndarray, str] | None:
    """The part novelties the run's fold heads measured on photos they never saw (for
    the gallery's novelty threshold) and what they are, or None."""
    path = run_dir / EMBED_DIR / HELD_OUT_FILE
    if not path.exists():
        return None
    with np.load(path) as stored:
        parts = stored["part_novelty"]
        views = str(stored["views"]) if "views" in stored else "default"
    how = "out-of-fold training photos (embedding heads fitted without their fold)"
    if views != "default":
        what = HELD_OUT_VIEWS.get(views, views)
        how += f", cut as a line shows them with the {views} line jitter ({what})"
    return parts, how


# what each jitter's held-out views are, for the `novelty_from` text
HELD_OUT_VIEWS = {
    "wide": "belts of other grey levels and textures, shading, scales 0.6-1.6",
}


def held_out_views(path: Path) -> str | None:
    """Which views a held-out novelty file was measured on (None: no file)."""
    if not path.exists():
        return None
    with np.load(path) as stored:
        return str(stored["views"]) if "views" in stored else "default"


def load_source(run_dir: Path) -> dict | None:
    """{model, split, data} of a run whose trunk and classifier are an exported folder."""
    path = run_dir / EMBED_DIR / SOURCE_FILE
    return json.loads(path.read_text()) if path.exists() else None
