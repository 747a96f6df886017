"""`linewatch serve`: the API and dashboard on uvicorn."""

from __future__ import annotations

import logging
import threading

from linewatch.pipeline.config import Settings

log = logging.getLogger("linewatch.api")

LOOPBACK = "127.0.0.1"


def bind_host(settings: Settings, host: str | None) -> str:
    """The address to listen on: without a token, only 127.0.0.1 (and say so)."""
    wanted = host or settings.api.host
    if settings.api.token is None and wanted != LOOPBACK:
        log.warning(
            "no api.token (LINEWATCH_API__TOKEN) configured: the API is open, so it listens "
            "on %s only, not %s; set a token to serve other hosts",
            LOOPBACK,
            wanted,
        )
        return LOOPBACK
    if settings.api.token is None:
        log.warning("no api.token configured: the API is open and listens on %s only", LOOPBACK)
    return wanted


def serve(
    settings: Settings, host: str | None = None, port: int | None = None, preload: bool = True
) -> None:
    """Run the app until interrupted; the model is loaded in the background at start."""
    import uvicorn

    from linewatch.api.app import build_context, create_app

    context = build_context(settings)
    if preload:
        threading.Thread(target=_preload, args=(context,), daemon=True).start()
    address, chosen_port = bind_host(settings, host), port or settings.api.port
    log.info("serving the API and dashboard on http://%s:%d/", address, chosen_port)
    uvicorn.run(
        create_app(context),
        host=address,
        port=chosen_port,
        log_level="warning",
        access_log=False,  # an access log would be harmless, but keep requests out of logs
    )


def _preload(context) -> None:  # type: ignore[no-untyped-def]
    try:
        context.models.predict([])
    except Exception as exc:  # reported again to the first /v1/classify caller
        log.warning("classify model not loaded at start: %s", exc)
