"""The FastAPI app: context (settings, database, Redis, model), open routes (/healthz,
the dashboard's static shell), the authenticated /v1 routes, /metrics and /docs."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from sqlalchemy import Engine, text

from linewatch.api import metrics, routes, routes_gallery, routes_line, routes_live
from linewatch.api.auth import COOKIE, require_user, session_value, user_for
from linewatch.api.classify import ModelHolder
from linewatch.api.limits import LimitUploads
from linewatch.api.uploads import UploadError
from linewatch.pipeline.config import Settings
from linewatch.pipeline.errors import LinewatchError
from linewatch.pipeline.inference import switching
from linewatch.pipeline.storage import database
from linewatch.pipeline.streams import broker

log = logging.getLogger(__name__)

STATIC = Path(str(resources.files("linewatch.api") / "static"))


class SignIn(BaseModel):
    token: str = Field(max_length=4096)


@dataclass
class ApiContext:
    settings: Settings
    engine: Engine
    redis: broker.Client | None
    models: ModelHolder
    stopping: threading.Event = field(default_factory=threading.Event)  # ends event streams


def build_context(settings: Settings) -> ApiContext:
    """Open the database (schema checked) and Redis (when configured) of the line."""
    engine = database.open_database(settings.resolved_database_url())
    client = broker.connect_to(settings, "the API") if settings.has_redis else None

    def running() -> Path:
        return switching.running_model_dir(client, settings)

    return ApiContext(settings, engine, client, ModelHolder(settings, running))


def create_app(context: ApiContext) -> FastAPI:
    app = FastAPI(
        title="linewatch",
        description="Defect inspection for factory line cameras: parts, verdicts, reviews.",
        version="1",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.ctx = context
    api = context.settings.api
    upload_bytes = int(api.max_upload_mb * 1_000_000) * api.max_files
    app.add_middleware(LimitUploads, paths=("/v1/classify",), max_bytes=upload_bytes)
    app.add_middleware(metrics.RecordRequests)
    app.add_exception_handler(UploadError, _upload_error)
    app.add_exception_handler(LinewatchError, _unavailable)
    app.add_exception_handler(database.DatabaseError, _database_error)
    _open_routes(app)
    authed = [Depends(require_user)]
    app.include_router(routes.router, dependencies=authed)
    app.include_router(routes_line.router, dependencies=authed)
    app.include_router(routes_live.router, dependencies=authed)
    app.include_router(routes_gallery.router, dependencies=authed)
    _docs_routes(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


async def _upload_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, UploadError)
    return JSONResponse({"detail": exc.problem, "file": exc.filename}, status_code=exc.status)


async def _unavailable(_request: Request, exc: Exception) -> JSONResponse:
    """A model folder that does not load, Redis or the database down: 503, the reason."""
    return JSONResponse({"detail": str(exc)}, status_code=503)


async def _database_error(_request: Request, exc: Exception) -> JSONResponse:
    log.warning("database error: %s", type(exc).__name__)
    return JSONResponse(
        {"detail": f"database unavailable ({type(exc).__name__}); try again"}, status_code=503
    )


def _open_routes(app: FastAPI) -> None:
    @app.get("/healthz", include_in_schema=False)
    def healthz(request: Request) -> JSONResponse:
        ctx: ApiContext = request.app.state.ctx
        checks = {"database": _database_ok(ctx.engine), "redis": _redis_ok(ctx.redis)}
        healthy = all(value in ("ok", "not configured") for value in checks.values())
        return JSONResponse(
            {"status": "ok" if healthy else "degraded", **checks},
            status_code=200 if healthy else 503,
        )

    @app.post("/v1/session", summary="Dashboard sign-in: token in, HttpOnly session cookie out")
    def sign_in(request: Request, body: SignIn) -> JSONResponse:
        settings = request.app.state.ctx.settings.api
        user = user_for(settings, body.token)
        if user is None:
            return JSONResponse({"detail": "wrong token"}, status_code=401)
        response = JSONResponse({"user": user})
        if settings.token is not None:
            response.set_cookie(
                COOKIE,
                session_value(settings.token.get_secret_value()),
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
            )
        return response

    @app.delete("/v1/session", summary="Sign out (drops the session cookie)")
    def sign_out() -> JSONResponse:
        response = JSONResponse({"signed_out": True})
        response.delete_cookie(COOKIE)
        return response

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


def _docs_routes(app: FastAPI) -> None:
    @app.get("/metrics", include_in_schema=False, dependencies=[Depends(require_user)])
    def prometheus() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(require_user)])
    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=[Depends(require_user)])
    def docs() -> Response:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="linewatch API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )

    assets = _swagger_assets()
    if assets is not None:
        app.mount("/docs-assets", StaticFiles(directory=assets), name="docs-assets")


def _swagger_assets() -> Path | None:
    try:
        import swagger_ui_bundle
    except ImportError:  # /docs then falls back to a page without its script
        return None
    return Path(swagger_ui_bundle.swagger_ui_path)


def _database_ok(engine: Engine) -> str:
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return "ok"
    except database.DatabaseError as exc:
        return f"unreachable ({type(exc).__name__})"


def _redis_ok(client: broker.Client | None) -> str:
    if client is None:
        return "not configured"
    try:
        client.ping()
        return "ok"
    except Exception as exc:  # any redis error: report, never raise from a health check
        return f"unreachable ({type(exc).__name__})"
