"""Prometheus metrics of the API process (served at /metrics with the token)."""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter(
    "linewatch_api_requests_total", "HTTP requests by route and status", ["route", "status"]
)
LATENCY = Histogram(
    "linewatch_api_request_seconds",
    "HTTP request time by route (SSE: until the stream starts)",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CLASSIFIED = Counter("linewatch_api_classified_images_total", "Images classified by /v1/classify")
EVENT_CLIENTS = Gauge("linewatch_api_event_clients", "Open /v1/events streams")


class RecordRequests:
    """ASGI middleware: count and time each HTTP request by its route template (not its
    raw path, so part ids do not make a label each). Pure ASGI, so streamed responses
    (SSE) pass through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), [500]

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                LATENCY.labels(_route(scope)).observe(time.perf_counter() - start)
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            REQUESTS.labels(_route(scope), str(status[0])).inc()


def _route(scope: Scope) -> str:
    return str(getattr(scope.get("route"), "path", "unmatched"))
