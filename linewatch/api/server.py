"""`linewatch serve`, and the `api` role of `linewatch run` (`api.enabled`): the API and
dashboard on uvicorn."""

from __future__ import annotations

import logging
import socket
import threading
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn

from linewatch.pipeline.config import Settings
from linewatch.pipeline.runtime import run_worker

if TYPE_CHECKING:
    from linewatch.api.app import ApiContext

log = logging.getLogger("linewatch.api")

LOOPBACK = "127.0.0.1"
SHUTDOWN_S = 5  # then requests still running are cancelled


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


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    """Run the app until interrupted; the model is loaded in the background once it listens."""
    from linewatch.api.app import build_context, create_app
    from linewatch.pipeline.inference.predictor import import_paddle

    context = build_context(settings)
    import_paddle()  # it replaces the SIGTERM handler: before uvicorn installs its own
    address, chosen_port = bind_host(settings, host), port or settings.api.port
    log.info("serving the API and dashboard on http://%s:%d/", address, chosen_port)
    config = uvicorn.Config(
        create_app(context),
        host=address,
        port=chosen_port,
        log_level="warning",
        access_log=False,  # an access log would be harmless, but keep requests out of logs
        timeout_graceful_shutdown=SHUTDOWN_S,
    )
    _Server(config, context=context).run()  # a port in use: logged, exit code 3


class _Server(uvicorn.Server):
    """uvicorn that loads the model once it listens (so a port in use exits before paddle
    is at work in a thread), and tells open event streams to end when it is asked to
    stop (they would hold the shutdown until its timeout cancels them)."""

    def __init__(self, config: uvicorn.Config, context: ApiContext) -> None:
        super().__init__(config)
        self.context = context

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        threading.Thread(target=_preload, args=(self.context,), daemon=True).start()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.context.stopping.set()
        super().handle_exit(sig, frame)


def main(settings: Settings, debug: bool = False) -> None:
    """The `api` role of `linewatch run`: `serve` on api.host and api.port."""
    run_worker("api", debug, lambda _stop: serve(settings))


def _preload(context: ApiContext) -> None:
    try:
        context.models.predict([])
    except Exception as exc:  # reported again to the first /v1/classify caller
        log.warning("classify model not loaded at start: %s", exc)
