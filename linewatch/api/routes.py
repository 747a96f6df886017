"""/v1 routes for parts: classify an upload, list and read parts, review them."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, Field

from linewatch.api.auth import require_user
from linewatch.api.classify import answer
from linewatch.api.metrics import CLASSIFIED
from linewatch.api.uploads import Limits, UploadError, decode_upload
from linewatch.pipeline.decide.verdict import ModelLabels, model_labels, view_defect_score
from linewatch.pipeline.inference.explain import NotAClassifier
from linewatch.pipeline.inference.gallery import gallery_settings_of
from linewatch.pipeline.inference.prediction import CLEAN_LABEL
from linewatch.pipeline.storage import parts_queries as queries
from linewatch.pipeline.storage.reporting import parse_time
from linewatch.schemas.decisions import UNKNOWN_LABEL, ViewResult

if TYPE_CHECKING:  # app.py imports this module
    from linewatch.api.app import ApiContext

router = APIRouter(prefix="/v1")

Limit = Annotated[int, Query(ge=1, le=500, description="rows per page")]
Cursor = Annotated[int | None, Query(ge=1, description="next_cursor of the previous page")]
When = Annotated[
    str | None,
    Query(description="UTC date or date-time (2026-11-01, 2026-11-01T06:00Z) or an age (24h)"),
]
Verdict = Literal["ok", "defect", "uninspected"]


def parse_when(name: str, value: str | None) -> datetime | None:
    """A query parameter's time (aware UTC), or 422 naming the parameter."""
    if value is None:
        return None
    now = datetime.now(timezone.utc)
    try:
        return parse_time(value, now)
    except ValueError as exc:
        problem = str(exc)
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise HTTPException(
            422, [{"loc": ["query", name], "msg": problem, "type": "value_error"}]
        ) from exc
    moment = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def _ctx(request: Request) -> ApiContext:
    return request.app.state.ctx  # type: ignore[no-any-return]


def _limits(request: Request) -> Limits:
    api = _ctx(request).settings.api
    return Limits(max_bytes=int(api.max_upload_mb * 1_000_000), max_side=api.max_side_px)


@router.post("/classify", summary="Classify JPEG/PNG images with the line's model")
def classify(
    request: Request,
    file: Annotated[list[UploadFile], File(description="one or more JPEG or PNG images")],
) -> dict[str, Any]:
    api = _ctx(request).settings.api
    if len(file) > api.max_files:
        raise HTTPException(413, f"{len(file)} files, at most {api.max_files} per request")
    limits = _limits(request)
    names = [upload.filename or f"file{i}" for i, upload in enumerate(file)]
    images = [
        decode_upload(name, _read(upload, limits.max_bytes, name), limits)
        for name, upload in zip(names, file, strict=True)
    ]
    model, predictions = _ctx(request).models.predict(images)
    CLASSIFIED.inc(len(images))
    return {"results": [answer(model, p, n) for p, n in zip(predictions, names, strict=True)]}


def _read(upload: UploadFile, max_bytes: int, name: str) -> bytes:
    data = upload.file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UploadError(413, name, f"file is over the {max_bytes / 1_000_000:g} MB limit")
    return data


@router.get("/parts", summary="Parts, newest first (keyset pages)")
def list_parts(
    request: Request,
    camera: Annotated[str | None, Query(max_length=128)] = None,
    verdict: Verdict | None = None,
    label: Annotated[str | None, Query(max_length=64)] = None,
    since: When = None,
    until: When = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> dict[str, Any]:
    where = queries.PartFilter(
        camera, verdict, label, parse_when("since", since), parse_when("until", until)
    )
    page = queries.list_parts(_ctx(request).engine, where, limit, cursor)
    return {"items": page.items, "next_cursor": page.next_cursor}


def _part_or_404(request: Request, part: int) -> dict[str, Any]:
    found = queries.get_part(_ctx(request).engine, part)
    if found is None:
        raise HTTPException(404, f"no part with id {part}")
    return found


@router.get("/parts/{part}", summary="One part with its review history")
def get_part(request: Request, part: int) -> dict[str, Any]:
    found = _part_or_404(request, part)
    return {**found, "reviews": queries.reviews_of(_ctx(request).engine, part)}


ViewCursor = Annotated[
    int | None, Query(ge=0, description="next_cursor of the previous page (its last view index)")
]


@router.get(
    "/parts/{part}/views",
    summary="The part's stored views in view order with their scores (keyset pages)",
)
def part_views(
    request: Request, part: int, limit: Limit = 50, cursor: ViewCursor = None
) -> dict[str, Any]:
    ctx = _ctx(request)
    found = _part_or_404(request, part)
    items, next_cursor = queries.part_view_page(
        ctx.engine, found["camera_id"], found["part_id"], limit, cursor
    )
    model = model_labels(ctx.models.folder())
    return {
        "part": part,
        "model_version": model.version,
        "threshold": ctx.settings.verdict.defect_threshold or model.defect_threshold,
        "top_views": ctx.settings.verdict.top_views,
        "items": [{**item, "defect_score": _defect_score(item, model)} for item in items],
        "next_cursor": next_cursor,
    }


def _defect_score(item: dict[str, Any], model: ModelLabels) -> float | None:
    """A view's defect score as the verdict rule computes it; None when the view was not
    inferred or came from a model version other than the line's current one."""
    if item["status"] != "ok" or item["model_version"] != model.version:
        return None
    topk = tuple((str(label), float(score)) for label, score in item["topk"])
    view = ViewResult(item["view_index"], item["seq"], item["pts"], "ok", model.version, topk)
    return view_defect_score(view, model)


def _evidence_or_404(request: Request, part: int) -> bytes:
    data = queries.part_evidence(_ctx(request).engine, part)
    if data is None:
        _part_or_404(request, part)
        raise HTTPException(404, f"part {part} has no evidence crop")
    return data


@router.get(
    "/parts/{part}/evidence.jpg",
    summary="The part's evidence crop (JPEG)",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}},
)
def part_evidence(request: Request, part: int) -> Response:
    return Response(
        _evidence_or_404(request, part),
        media_type="image/jpeg",
        headers={"Cache-Control": "private, max-age=3600"},
    )


@router.get(
    "/parts/{part}/heatmap.jpg",
    summary="The evidence crop with an occlusion heat map of where the line's current "
    "model sees the defect (JPEG; ~50 forward passes)",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}},
)
def part_heat_map(request: Request, part: int) -> Response:
    evidence = _evidence_or_404(request, part)
    try:
        model, jpeg = _ctx(request).models.heat_map(evidence)
    except NotAClassifier as exc:
        raise HTTPException(409, str(exc)) from exc
    except ValueError as exc:
        raise HTTPException(422, f"part {part}: {exc}") from exc
    headers = {"Cache-Control": "private, max-age=3600", "X-Linewatch-Model": model.info.version}
    return Response(jpeg, media_type="image/jpeg", headers=headers)


class ReviewIn(BaseModel):
    verdict: Literal["ok", "defect"]
    label: str | None = Field(default=None, max_length=64, description="default: the normal class")
    note: str | None = Field(default=None, max_length=2000)


@router.post("/parts/{part}/review", status_code=201, summary="Confirm or correct a verdict")
def review_part(
    request: Request, part: int, review: ReviewIn, user: Annotated[str, Depends(require_user)]
) -> dict[str, Any]:
    label = _review_label(request, review)
    stored = queries.add_review(
        _ctx(request).engine, part, user, review.verdict, label, review.note
    )
    if stored is None:
        raise HTTPException(404, f"no part with id {part}")
    return stored


NEW_CLASS = re.compile(r"[a-z][a-z0-9_-]{1,31}")


def _review_label(request: Request, review: ReviewIn) -> str:
    info = _ctx(request).models.info()
    normal = tuple(info.normal_labels) or (CLEAN_LABEL,)  # a detector may name none
    label = review.label or (normal[0] if review.verdict == "ok" else None)
    if label is None:
        raise HTTPException(422, "a defect review needs the defect class in `label`")
    if label not in (*info.labels, *normal) and not _new_class(info, review, label):
        known = ", ".join(sorted({*info.labels, *normal}))
        raise HTTPException(422, f"unknown label {label!r}; the model knows {known}")
    if (label in normal) != (review.verdict == "ok"):
        raise HTTPException(422, f"label {label!r} does not match verdict {review.verdict!r}")
    return label


def _new_class(info: Any, review: ReviewIn, label: str) -> bool:
    """A defect class the classifier does not know, which a model with a gallery learns
    from reviews (`linewatch gallery add`); 422 for a name that cannot be one."""
    if review.verdict != "defect" or gallery_settings_of(info) is None:
        return False
    if not NEW_CLASS.fullmatch(label) or label == UNKNOWN_LABEL:
        raise HTTPException(
            422,
            f"new class {label!r}: a class name is 2-32 characters of a-z, 0-9, _ and -, "
            f"starting with a letter, and not {UNKNOWN_LABEL!r}",
        )
    return True


@router.get("/reviews/queue", summary="Parts to review: shadow disagreements, near threshold")
def review_queue(request: Request, limit: Limit = 20, since: When = "24h") -> dict[str, Any]:
    ctx = _ctx(request)
    threshold = ctx.models.info().defect_threshold
    band = ctx.settings.api.uncertainty_band
    items = queries.review_queue(ctx.engine, threshold, band, limit, parse_when("since", since))
    return {"threshold": threshold, "band": band, "items": items}


@router.get("/model", summary="The line's model: name, version, labels, defect threshold")
def model(request: Request) -> dict[str, Any]:
    info = _ctx(request).models.info()
    return {
        "name": info.name,
        "version": info.version,
        "labels": list(info.labels),
        "normal_labels": list(info.normal_labels),
        "threshold": info.defect_threshold,
        "gallery": gallery_settings_of(info) is not None,  # learns classes from reviews
    }
