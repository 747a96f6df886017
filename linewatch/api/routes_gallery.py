"""/v1 routes for the running model's gallery: its classes, and adding reviewed parts
(the dashboard's "add reviewed parts to the gallery"; linewatch/gallery.py)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field

from linewatch.api.auth import require_user
from linewatch.gallery import Added, add_from_reviews, gallery_contents
from linewatch.pipeline.errors import LinewatchError
from linewatch.pipeline.inference.gallery import bump_revision
from linewatch.pipeline.inference.loading import Model

if TYPE_CHECKING:  # app.py imports this module
    from linewatch.api.app import ApiContext

router = APIRouter(prefix="/v1")


def _ctx(request: Request) -> ApiContext:
    return request.app.state.ctx  # type: ignore[no-any-return]


@router.get(
    "/gallery",
    summary="The running model's gallery: trained entries and reviewed parts per class",
)
def gallery(request: Request) -> dict[str, Any]:
    folder = _ctx(request).models.folder()
    try:
        contents = gallery_contents(folder)
    except LinewatchError as exc:
        raise HTTPException(409, str(exc)) from exc
    section = contents.section
    return {
        "novelty_threshold": section.novelty_threshold,
        "top_views": section.top_views,
        "classes": [
            {"label": label, "trained": trained, "reviewed": reviewed}
            for label, trained, reviewed in contents.rows()
        ],
    }


class AddReviewsIn(BaseModel):
    label: str | None = Field(default=None, max_length=64, description="only this class")


@router.post(
    "/gallery/reviews",
    summary="Add reviewed parts to the running model's gallery (no retraining)",
)
def add_reviews(
    request: Request, body: AddReviewsIn, user: Annotated[str, Depends(require_user)]
) -> dict[str, Any]:
    ctx = _ctx(request)
    bump = partial(bump_revision, ctx.redis, ctx.settings) if ctx.redis is not None else None

    def work(model: Model, folder: Path) -> Added:
        return add_from_reviews(
            engine=ctx.engine, folder=folder, model=model, label=body.label, bump=bump
        )

    try:
        added = ctx.models.using(work)
    except LinewatchError as exc:
        raise HTTPException(409, str(exc)) from exc
    return {
        "added": added.added,
        "already": added.already,
        "without_crop": added.without_crop,
        "undecodable": added.undecodable,
        "revision": added.revision,
        "by": user,
        "summary": added.summary(),
    }
