"""Values that deciding and storage share: a part's stored views, pending part ends, the
line alarm's parts and events (plain frozen dataclasses).

They live below both `pipeline/decide/` (which makes them) and `pipeline/storage/` (which
writes and reads them), so neither imports the other's room for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .messages import PartEndMessage

UNINSPECTED_LABEL = "uninspected"
UNKNOWN_LABEL = "unknown"  # a part farther from every gallery entry than the threshold
LINE_LABEL = "ng-rate"


@dataclass(frozen=True)
class ViewResult:
    """One stored view of a part (a `detections` row with its part_id)."""

    view_index: int
    seq: int
    pts: float
    status: str  # ok | stale | undecodable | invalid-output
    model_version: str
    topk: tuple[tuple[str, float], ...]
    box: tuple[int, int, int, int] | None = None  # the part's box in frame pixels
    evidence: bytes | None = field(default=None, repr=False)  # crop JPEG (defect views)
    novelty: float | None = None  # a model with a gallery (else None)
    gallery_label: str | None = None

    @property
    def inferred(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class PendingPart:
    """A stored part end and how many of its views are stored (any status)."""

    end: PartEndMessage
    deadline_ts: int
    announced: bool  # sent as uninspected at the deadline; waiting for late views
    views_stored: int

    @property
    def key(self) -> tuple[str, int]:
        return (self.end.camera_id, self.end.part_id)

    @property
    def complete(self) -> bool:
        return self.views_stored >= self.end.views_sent


@dataclass(frozen=True)
class PartOutcome:
    """A decided part as the line alarm counts it."""

    camera_id: str
    part_id: int
    first_seq: int
    last_seq: int
    capture_ts: int  # the part's last capture time
    ng: bool


@dataclass(frozen=True)
class LineEvent:
    """A line alarm that opened or closed (alert kind `line`)."""

    camera_id: str
    state: str  # "open" | "closed"
    opened_seq: int
    opened_ts: int
    rate: float  # NG rate over the window when it opened (peak while open)
    ng_parts: int  # NG parts in the window when it opened (then counted while open)
    closed_seq: int | None = None
    closed_ts: int | None = None
