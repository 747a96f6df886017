"""HTTP API through FastAPI's TestClient on a real database (SQLite and PostgreSQL) and
the real shipped model: uploads, auth, filters and pages, validation, reviews."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from linewatch.api.app import ApiContext, build_context, create_app
from linewatch.api.classify import ModelHolder
from linewatch.pipeline.config import Settings, load_settings
from linewatch.pipeline.decide.ng_rule import ng_sql
from linewatch.pipeline.errors import ConfigError
from linewatch.pipeline.inference.loading import load_model
from linewatch.pipeline.inference.prediction import predictions
from linewatch.pipeline.storage import parts_queries as queries
from linewatch.pipeline.storage.database import write_batch
from linewatch.pipeline.video.belt_view import canonical_view
from linewatch.schemas.messages import PartView
from linewatch.schemas.tables import Detection, ShadowDetection
from tests.support.api import (
    AUTH,
    MODEL_DIR,
    TOKEN,
    api_settings,
    insert_part,
    jpeg,
    png,
    shared_models,
    tile,
    utc_now,
)
from tests.support.builders import RESULT

NOISE = np.random.default_rng(0).integers(0, 255, (200, 200, 3), np.uint8)


@pytest.fixture()
def models() -> ModelHolder:
    return shared_models()


def make_client(settings: Settings, models: ModelHolder) -> tuple[TestClient, ApiContext]:
    context = build_context(settings)
    context.models = models
    return TestClient(create_app(context)), context


@pytest.fixture()
def api(database_url: str, models: ModelHolder) -> Iterator[tuple[TestClient, ApiContext]]:
    client, context = make_client(api_settings(database_url), models)
    with client:
        yield client, context
    context.engine.dispose()


@pytest.fixture()
def lite(sqlite_url: str, models: ModelHolder) -> Iterator[TestClient]:
    client, context = make_client(api_settings(sqlite_url, max_upload_mb=0.05), models)
    with client:
        yield client
    context.engine.dispose()


def post_files(client: TestClient, *files: tuple[str, bytes, str]) -> Any:
    return client.post("/v1/classify", headers=AUTH, files=[("file", f) for f in files])


# --- /v1/classify -------------------------------------------------------------------


def test_classify_png_and_jpeg_answer_as_the_worker_would_on_both_views(lite: TestClient) -> None:
    """An upload is judged as uploaded and as the line would cut it (on the belt, the
    line's crop), each in the four orientations a tile lies in on a belt, the
    probabilities averaged; each through the worker's own code path."""
    image = tile(1)
    response = post_files(
        lite, ("tile.png", png(image), "image/png"), ("tile.jpg", jpeg(image), "image/jpeg")
    )
    assert response.status_code == 200, response.text
    by_png, by_jpeg = response.json()["results"]
    worker_model = load_model(MODEL_DIR, threads=1, max_batch=2)
    size = worker_model.preprocessor.output_size[0]
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    as_line = np.repeat(canonical_view(grey, size)[..., None], 3, axis=2)
    views = [
        turned
        for view in (image, as_line)
        for turned in (view, view[:, ::-1], view[::-1], view[::-1, ::-1])
    ]
    probs = worker_model.predict([np.ascontiguousarray(v) for v in views])  # the worker's path
    (expected,) = predictions(probs.mean(axis=0, keepdims=True), worker_model.info)
    assert expected is not None
    assert by_png["label"] == expected.label
    assert by_png["score"] == pytest.approx(expected.score, abs=1e-4)
    assert by_png["is_defect"] == expected.is_defect
    assert [t["label"] for t in by_png["topk"]] == [label for label, _ in expected.topk]
    assert by_png["model_name"] == worker_model.info.name
    assert by_png["model_version"] == worker_model.info.version
    assert by_png["threshold"] == worker_model.info.defect_threshold
    assert by_jpeg["file"] == "tile.jpg" and by_jpeg["label"] in worker_model.info.labels


def test_a_mirrored_or_turned_upload_gets_the_same_answer(lite: TestClient) -> None:
    image = tile(2)
    turned = {
        "as-is.png": image,
        "mirrored.png": image[:, ::-1],
        "turned.png": image[::-1, ::-1],
    }
    files = [(name, png(np.ascontiguousarray(view)), "image/png") for name, view in turned.items()]
    response = post_files(lite, *files)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len({result["label"] for result in results}) == 1
    assert results[1]["score"] == pytest.approx(results[0]["score"], abs=1e-4)
    assert results[2]["score"] == pytest.approx(results[0]["score"], abs=1e-4)


def test_classify_several_files_one_result_each_in_order(lite: TestClient) -> None:
    files = [(f"t{i}.png", png(tile(i)), "image/png") for i in range(3)]
    response = post_files(lite, *files)
    assert response.status_code == 200
    assert [r["file"] for r in response.json()["results"]] == ["t0.png", "t1.png", "t2.png"]


def test_type_is_told_by_the_bytes_not_the_name(lite: TestClient) -> None:
    response = post_files(lite, ("photo.png", jpeg(tile()), "image/png"))
    assert response.status_code == 200  # JPEG bytes named .png are a JPEG


@pytest.mark.parametrize(
    ("name", "data", "status", "words"),
    [
        ("notes.txt", b"just some text, not an image", 415, "not a JPEG or PNG"),
        ("renamed.jpg", b"GIF89a\x01\x00\x01\x00", 415, "not a JPEG or PNG"),
        ("notes.jpg", b"a text file renamed to .jpg\n", 415, "not a JPEG or PNG"),
        ("empty.png", b"", 415, "empty file"),
        ("cut.jpg", jpeg(tile())[:400], 400, "truncated"),
        ("cut.png", png(tile())[:20], 400, "truncated or corrupt"),
        ("garbage.png", png(tile())[:40] + b"\x00" * 200, 400, "does not decode"),
        ("huge.png", png(np.zeros((1, 20000, 3), np.uint8)), 413, "over 8192 px"),
        (
            "big.png",
            png(np.random.default_rng(0).integers(0, 255, (200, 200, 3), np.uint8)),
            413,
            "MB limit",
        ),
    ],
)
def test_bad_uploads_are_refused_naming_the_problem(
    lite: TestClient, name: str, data: bytes, status: int, words: str
) -> None:
    response = post_files(lite, (name, data, "application/octet-stream"))
    assert response.status_code == status, response.text
    body = response.json()
    assert words in body["detail"] and body["file"] == name


def test_one_bad_file_among_good_ones_names_that_file(lite: TestClient) -> None:
    response = post_files(lite, ("ok.png", png(tile()), "image/png"), ("bad.bin", b"xx", "x/y"))
    assert response.status_code == 415 and response.json()["file"] == "bad.bin"


def test_classify_without_a_file_is_422(lite: TestClient) -> None:
    response = lite.post("/v1/classify", headers=AUTH, data={"other": "x"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "file"]


# --- auth ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/v1/parts", "/v1/cameras", "/v1/alerts", "/v1/report?since=1h", "/metrics", "/docs"]
)
def test_every_route_but_healthz_needs_the_token(lite: TestClient, path: str) -> None:
    missing = lite.get(path)
    wrong = lite.get(path, headers={"Authorization": "Bearer not-the-token"})
    assert missing.status_code == 401 and "missing bearer token" in missing.json()["detail"]
    assert wrong.status_code == 401 and "wrong token" in wrong.json()["detail"]
    assert missing.headers["www-authenticate"] == "Bearer"
    assert lite.get(path, headers=AUTH).status_code == 200


UNLISTED = [("get", "/metrics"), ("get", "/openapi.json"), ("get", "/docs")]


def test_every_data_route_refuses_a_request_without_the_token(lite: TestClient) -> None:
    paths = lite.app.openapi()["paths"]  # type: ignore[attr-defined]
    listed = [(m, p) for p, methods in paths.items() for m in methods if p != "/v1/session"]
    assert len(listed) >= 12
    for method, path in listed + UNLISTED:
        response = lite.request(method, path.replace("{part}", "1"))
        assert response.status_code == 401, f"{method} {path}: {response.status_code}"
    assert lite.get("/static/dashboard.js").status_code == 200  # static files hold no data


def test_classify_needs_the_token(lite: TestClient) -> None:
    response = lite.post("/v1/classify", files=[("file", ("a.png", png(tile()), "image/png"))])
    assert response.status_code == 401


def test_healthz_and_the_dashboard_shell_are_open(lite: TestClient) -> None:
    health = lite.get("/healthz")
    assert health.status_code == 200 and health.json()["database"] == "ok"
    assert lite.get("/").status_code == 200 and "linewatch" in lite.get("/").text


def test_sign_in_sets_a_session_cookie_that_is_not_the_token(lite: TestClient) -> None:
    assert lite.post("/v1/session", json={"token": "nope"}).status_code == 401
    response = lite.post("/v1/session", json={"token": TOKEN})
    assert response.status_code == 200 and response.json()["user"] == "alice"
    cookie = response.cookies.get("lw_session")
    assert cookie and TOKEN not in cookie
    assert "httponly" in response.headers["set-cookie"].lower()
    assert lite.get("/v1/parts").status_code == 200  # the cookie now authenticates
    lite.cookies.set("lw_session", "forged")
    assert lite.get("/v1/parts").status_code == 401


def test_the_openapi_document_lists_the_routes(lite: TestClient) -> None:
    paths = lite.get("/openapi.json", headers=AUTH).json()["paths"]
    assert {"/v1/classify", "/v1/parts", "/v1/parts/{part}/review", "/v1/events"} <= set(paths)
    docs = lite.get("/docs", headers=AUTH).text
    assert "/docs-assets/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()
    assert lite.get("/docs-assets/swagger-ui-bundle.js").status_code == 200


# --- parts: filters, pages, validation ----------------------------------------------


def seed_parts(engine: Engine) -> dict[str, int]:
    now = utc_now()
    ids = {
        "a1": insert_part(engine, part_id=1, captured_at=now - timedelta(hours=3)),
        "a2": insert_part(
            engine,
            part_id=2,
            verdict="defect",
            label="crack",
            score=0.9,
            captured_at=now - timedelta(hours=2),
            evidence=jpeg(tile(2)),
        ),
        "a3": insert_part(engine, part_id=3, verdict="uninspected", label="none", score=0.0),
        "b1": insert_part(engine, camera_id="cam-b", part_id=1, verdict="defect", label="fray"),
        "b2": insert_part(
            engine, camera_id="cam-b", part_id=2, captured_at=now - timedelta(hours=1)
        ),
    }
    return ids


def items(response: Any) -> list[int]:
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


def test_parts_filter_by_camera_verdict_label_and_time(api: tuple[TestClient, ApiContext]) -> None:
    client, context = api
    ids = seed_parts(context.engine)
    get = lambda query: items(client.get(f"/v1/parts?{query}", headers=AUTH))  # noqa: E731
    assert set(get("camera=cam-b")) == {ids["b1"], ids["b2"]}
    assert set(get("verdict=defect")) == {ids["a2"], ids["b1"]}
    assert get("verdict=defect&camera=cam-a&label=crack") == [ids["a2"]]
    now = utc_now()
    since = (now - timedelta(minutes=150)).strftime("%Y-%m-%dT%H:%M")
    until = (now - timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert set(get(f"since={since}&until={until}")) == {ids["a2"], ids["b2"]}
    assert set(get("since=90m")) == {ids["a3"], ids["b1"], ids["b2"]}
    assert get("camera=%27%20OR%201%3D1%20--") == []  # an injection-like value matches nothing
    assert len(get("")) == 5


def test_parts_pages_with_a_cursor_cover_every_row_once(
    api: tuple[TestClient, ApiContext],
) -> None:
    client, context = api
    ids = set(seed_parts(context.engine).values())
    seen: list[int] = []
    cursor = None
    while True:
        query = "limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(f"/v1/parts?{query}", headers=AUTH).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(ids, reverse=True)


def test_a_part_its_fields_and_its_evidence(api: tuple[TestClient, ApiContext]) -> None:
    client, context = api
    ids = seed_parts(context.engine)
    part = client.get(f"/v1/parts/{ids['a2']}", headers=AUTH).json()
    assert part["verdict"] == "defect" and part["label"] == "crack"
    assert part["box"] == [10, 20, 110, 120] and part["reviews"] == []
    assert part["class_scores"] == {"free": 0.99, "crack": 0.01}
    assert part["evidence_url"] == f"/v1/parts/{ids['a2']}/evidence.jpg"
    image = client.get(part["evidence_url"], headers=AUTH)
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    assert image.content.startswith(b"\xff\xd8\xff")
    assert client.get(f"/v1/parts/{ids['a1']}", headers=AUTH).json()["evidence_url"] is None
    none = client.get(f"/v1/parts/{ids['a1']}/evidence.jpg", headers=AUTH)
    assert none.status_code == 404 and "no evidence" in none.json()["detail"]


def test_a_parts_heat_map_overlays_its_evidence(api: tuple[TestClient, ApiContext]) -> None:
    client, context = api
    ids = seed_parts(context.engine)
    evidence = client.get(f"/v1/parts/{ids['a2']}/evidence.jpg", headers=AUTH).content
    heat = client.get(f"/v1/parts/{ids['a2']}/heatmap.jpg", headers=AUTH)
    assert heat.status_code == 200 and heat.headers["content-type"] == "image/jpeg"
    assert heat.headers["x-linewatch-model"] == context.models.info().version
    shown = cv2.imdecode(np.frombuffer(heat.content, np.uint8), cv2.IMREAD_COLOR)
    plain = cv2.imdecode(np.frombuffer(evidence, np.uint8), cv2.IMREAD_COLOR)
    assert shown.shape == plain.shape
    assert np.abs(shown.astype(int) - plain.astype(int)).mean() > 10, "no colour map drawn"
    none = client.get(f"/v1/parts/{ids['a1']}/heatmap.jpg", headers=AUTH)
    assert none.status_code == 404 and "no evidence" in none.json()["detail"]
    assert client.get(f"/v1/parts/{ids['a2']}/heatmap.jpg").status_code == 401


def store_views(engine: Engine, part_id: int, *views: tuple[int, int, str, str, Any]) -> None:
    """Part views of cam-a as the sink stores them: (seq, view index, status, model
    version, top-k) each."""
    results = [
        replace(
            RESULT,
            camera_id="cam-a",
            seq=seq,
            status=status,
            model_version=version,
            label=topk[0][0] if topk else "",
            score=topk[0][1] if topk else 0.0,
            topk=topk,
            evidence=b"",
            view=PartView(part_id, index, 10, 20, 110, 120),
        )
        for seq, index, status, version, topk in views
    ]
    write_batch(engine, results, sink_ts=1)


def test_a_parts_views_in_view_order_with_the_rules_defect_scores(
    api: tuple[TestClient, ApiContext],
) -> None:
    client, context = api
    version = context.models.info().version
    part = insert_part(context.engine, part_id=5, verdict="defect", label="crack", score=0.45)
    store_views(
        context.engine,
        5,
        (53, 2, "stale", version, ()),
        (51, 0, "ok", version, (("crack", 0.7), ("free", 0.2))),
        (52, 1, "ok", version, (("free", 0.9), ("crack", 0.05))),
        (54, 1, "ok", "older", (("crack", 0.99),)),  # view 1 again, by another model
        (55, 3, "ok", "older", (("break", 0.8), ("free", 0.2))),
    )
    store_views(context.engine, 6, (61, 0, "ok", version, (("crack", 0.9),)))  # another part
    response = client.get(f"/v1/parts/{part}/views", headers=AUTH)
    assert response.status_code == 200, response.text
    body = response.json()
    views = body["items"]
    assert [v["view_index"] for v in views] == [0, 1, 2, 3] and body["next_cursor"] is None
    assert [v["seq"] for v in views] == [51, 52, 53, 55], "the first stored row of each view"
    assert [v["status"] for v in views] == ["ok", "ok", "stale", "ok"]
    assert views[0]["label"] == "crack" and views[0]["topk"] == [["crack", 0.7], ["free", 0.2]]
    assert views[0]["defect_score"] == pytest.approx(0.8)  # 1 - P(free)
    assert views[1]["defect_score"] == pytest.approx(0.1)
    assert views[2]["defect_score"] is None  # not inferred
    assert views[3]["defect_score"] is None  # another model version than the line's
    assert views[0]["box"] == [10, 20, 110, 120] and views[0]["captured_at"].endswith("+00:00")
    assert body["threshold"] == context.models.info().defect_threshold
    assert (body["top_views"], body["model_version"], body["part"]) == (2, version, part)


def test_a_parts_views_page_by_view_index(api: tuple[TestClient, ApiContext]) -> None:
    client, context = api
    part = insert_part(context.engine, part_id=7)
    store_views(context.engine, 7, *((70 + i, i, "ok", "v1", (("free", 0.9),)) for i in range(5)))
    seen, cursor = [], None
    while True:
        query = f"?limit=2&cursor={cursor}" if cursor is not None else "?limit=2"
        page = client.get(f"/v1/parts/{part}/views{query}", headers=AUTH).json()
        seen += [v["view_index"] for v in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [0, 1, 2, 3, 4]
    empty = insert_part(context.engine, part_id=8)
    assert client.get(f"/v1/parts/{empty}/views", headers=AUTH).json()["items"] == []


@pytest.mark.parametrize(
    ("path", "status", "words"),
    [
        ("/v1/parts?since=yesterday", 422, "is not an age like 24h"),
        ("/v1/parts?until=2026-13-40", 422, "not a valid date"),
        ("/v1/parts?limit=-1", 422, "greater than or equal to 1"),
        ("/v1/parts?limit=100000", 422, "less than or equal to 500"),
        ("/v1/parts?cursor=0", 422, "greater than or equal to 1"),
        ("/v1/parts?verdict=maybe", 422, "'ok', 'defect' or 'uninspected'"),
        ("/v1/parts/999999", 404, "no part with id 999999"),
        ("/v1/parts/abc", 422, "valid integer"),
        ("/v1/parts/999999/evidence.jpg", 404, "no part with id 999999"),
        ("/v1/parts/999999/heatmap.jpg", 404, "no part with id 999999"),
        ("/v1/parts/999999/views", 404, "no part with id 999999"),
        ("/v1/parts/1/views?cursor=-1", 422, "greater than or equal to 0"),
        ("/v1/alerts?limit=0", 422, "greater than or equal to 1"),
        ("/v1/report", 422, "Field required"),
        ("/v1/report?since=2h&until=3h", 422, "must be before until"),
        ("/v1/cameras?window_min=-5", 422, "greater than 0"),
    ],
)
def test_bad_queries_answer_their_status_and_say_why(
    lite: TestClient, path: str, status: int, words: str
) -> None:
    response = lite.get(path, headers=AUTH)
    assert response.status_code == status, response.text
    assert words in json.dumps(response.json()), response.text


def test_cameras_with_parts_per_minute_ng_rate_and_model(
    api: tuple[TestClient, ApiContext],
) -> None:
    client, context = api
    seed_parts(context.engine)
    insert_part(context.engine, camera_id="cam-c", part_id=9, model_version="v2")
    body = client.get("/v1/cameras?window_min=60", headers=AUTH).json()
    cameras = {c["id"]: c for c in body["cameras"]}
    assert list(cameras) == ["cam-a", "cam-b", "cam-c"]  # configured first, then seen
    a = cameras["cam-a"]
    assert a["parts"] == 1 and a["rejected"] == 1 and a["ng_rate"] == 1.0  # a3: uninspected
    assert a["parts_per_min"] == pytest.approx(1 / 60)
    assert cameras["cam-c"]["model_version"] == "v2" and not cameras["cam-c"]["configured"]
    assert a["state"] is None  # no Redis configured here


def test_camera_ng_counts_parts_as_the_line_saw_them(api: tuple[TestClient, ApiContext]) -> None:
    """Uninspected parts are NG only when the gate rejects them; a defect decided after
    its deadline was sent as uninspected."""
    _, context = api
    seed_parts(context.engine)
    insert_part(context.engine, camera_id="cam-b", part_id=3, verdict="defect", late=True)
    since = utc_now() - timedelta(minutes=30)  # b2 is an hour old
    rejecting = queries.camera_parts(
        context.engine, since, ["cam-a"], ng_sql(reject_uninspected=True)
    )
    passing = queries.camera_parts(
        context.engine, since, ["cam-a"], ng_sql(reject_uninspected=False)
    )
    assert (rejecting["cam-a"].rejected, passing["cam-a"].rejected) == (1, 0)  # a3
    assert (rejecting["cam-b"].rejected, passing["cam-b"].rejected) == (2, 1)  # b1, b3 late
    assert rejecting["cam-b"].parts == 2


def test_report_and_hourly_rates_as_json(api: tuple[TestClient, ApiContext]) -> None:
    client, context = api
    seed_parts(context.engine)
    report = client.get("/v1/report?since=24h", headers=AUTH).json()
    assert {"camera_hours", "class_rates", "model_versions", "reviews"} <= set(report)
    assert sum(hour["parts"] for hour in report["parts_per_hour"]) == 5
    hours = client.get("/v1/stats/hourly?since=24h&camera=cam-a", headers=AUTH).json()["hours"]
    assert sum(h["rejected"] for h in hours) == 2 and sum(h["parts"] for h in hours) == 3


# --- reviews ------------------------------------------------------------------------


def test_reviews_are_kept_as_history_with_the_tokens_user(
    api: tuple[TestClient, ApiContext],
) -> None:
    client, context = api
    ids = seed_parts(context.engine)
    url = f"/v1/parts/{ids['a2']}/review"
    first = client.post(url, headers=AUTH, json={"verdict": "defect", "label": "crack"})
    assert first.status_code == 201, first.text
    second = client.post(url, headers=AUTH, json={"verdict": "ok", "note": "dust, not a crack"})
    assert second.status_code == 201
    reviews = client.get(f"/v1/parts/{ids['a2']}", headers=AUTH).json()["reviews"]
    assert [(r["verdict"], r["label"]) for r in reviews] == [("defect", "crack"), ("ok", "free")]
    assert {r["reviewer"] for r in reviews} == {"alice"}
    assert reviews[1]["machine_verdict"] == "defect" and reviews[1]["note"] == "dust, not a crack"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"verdict": "maybe"}, "'ok' or 'defect'"),
        ({"verdict": "defect"}, "needs the defect class"),
        ({"verdict": "ok", "label": "wobble"}, "unknown label 'wobble'"),
        # the shipped model has a gallery: a defect review may name a new class, if sane
        ({"verdict": "defect", "label": "Wobble!"}, "new class 'Wobble!'"),
        ({"verdict": "defect", "label": "unknown"}, "not 'unknown'"),
        ({"verdict": "ok", "label": "crack"}, "does not match verdict"),
        ({"verdict": "defect", "label": "x" * 65}, "at most 64 characters"),
    ],
)
def test_bad_reviews_are_422(lite: TestClient, body: dict[str, Any], words: str) -> None:
    response = lite.post("/v1/parts/1/review", headers=AUTH, json=body)
    assert response.status_code == 422 and words in response.text


def test_a_defect_review_may_name_a_new_class_for_a_model_with_a_gallery(
    api: tuple[TestClient, ApiContext],
) -> None:
    client, context = api
    part = insert_part(context.engine, part_id=77, verdict="defect", label="unknown")
    body = {"verdict": "defect", "label": "oil"}  # not one of the model's classes
    response = client.post(f"/v1/parts/{part}/review", headers=AUTH, json=body)
    assert response.status_code == 201 and response.json()["label"] == "oil"
    assert client.get("/v1/model", headers=AUTH).json()["gallery"] is True


def test_review_of_an_unknown_part_is_404(lite: TestClient) -> None:
    response = lite.post("/v1/parts/424242/review", headers=AUTH, json={"verdict": "ok"})
    assert response.status_code == 404 and "424242" in response.json()["detail"]


def test_review_queue_puts_shadow_disagreements_then_near_threshold_first(
    api: tuple[TestClient, ApiContext],
) -> None:
    client, context = api
    engine = context.engine
    threshold = client.get("/v1/reviews/queue", headers=AUTH).json()["threshold"]
    far_score = threshold - 0.4 if threshold > 0.5 else threshold + 0.4  # for any model's threshold
    far = insert_part(engine, part_id=1, score=far_score, verdict="defect", label="crack")
    near = insert_part(engine, part_id=2, score=threshold - 0.01, verdict="ok", label="free")
    shadow = insert_part(engine, part_id=3, score=far_score, verdict="defect", label="break")
    done = insert_part(engine, part_id=4, score=threshold, verdict="defect", label="crack")
    add_shadow_disagreement(engine, "cam-a", part_id=3, seq=31)
    client.post(f"/v1/parts/{done}/review", headers=AUTH, json={"verdict": "ok"})
    queue = client.get("/v1/reviews/queue", headers=AUTH).json()["items"]
    assert [item["id"] for item in queue] == [shadow, near, far]
    assert queue[0]["queued_for"] == ["shadow disagrees"]
    assert queue[1]["queued_for"] == ["near threshold"]


def add_shadow_disagreement(engine: Engine, camera: str, part_id: int, seq: int) -> None:
    now = utc_now()
    ts = int(now.timestamp() * 1e9)
    common = {"camera_id": camera, "seq": seq, "model_version": "v1", "captured_at": now}
    with Session(engine) as session, session.begin():
        session.add(
            Detection(
                **common,
                pts=0.0,
                status="ok",
                model_name="m",
                label="break",
                score=0.98,
                topk="break:0.98",
                is_defect=True,
                capture_ts=ts,
                ingest_ts=ts,
                dequeue_ts=ts,
                infer_start_ts=ts,
                infer_end_ts=ts,
                sink_ts=ts,
                worker_id="w",
                part_id=part_id,
                view_index=0,
            )
        )
        session.add(
            ShadowDetection(
                **{**common, "model_version": "shadow"},
                model_name="s",
                status="ok",
                label="free",
                score=0.9,
                is_defect=False,
                sink_ts=ts,
            )
        )


def test_report_gains_overkill_and_escape_rates_from_reviews(
    api: tuple[TestClient, ApiContext],
) -> None:
    client, context = api
    engine = context.engine
    rejected = [
        insert_part(engine, part_id=i, verdict="defect", label="crack", score=0.9) for i in range(4)
    ]
    passed = [insert_part(engine, part_id=10 + i) for i in range(5)]
    review = lambda part, **body: client.post(  # noqa: E731
        f"/v1/parts/{part}/review", headers=AUTH, json=body
    )
    review(rejected[0], verdict="ok")  # overkill
    review(rejected[1], verdict="defect", label="crack")
    review(passed[0], verdict="defect", label="fray")  # escape
    review(passed[1], verdict="ok")
    review(passed[2], verdict="defect", label="fray")  # corrected below: not an escape
    review(passed[2], verdict="ok")
    rates = client.get("/v1/report?since=24h", headers=AUTH).json()["reviews"]
    assert rates["reviewed"] == 5
    assert rates["overkill"] == 1 and rates["overkill_rate"] == pytest.approx(1 / 2)
    assert rates["escapes"] == 1 and rates["escape_rate"] == pytest.approx(1 / 3)
    per_class = {row["label"]: row for row in rates["per_class"]}
    assert per_class["crack"]["overkill_rate"] == pytest.approx(0.5)
    assert per_class["fray"]["escapes"] == 1


def test_metrics_count_requests_by_route_and_classified_images(lite: TestClient) -> None:
    post_files(lite, ("a.png", png(tile()), "image/png"))
    lite.get("/v1/parts/12345", headers=AUTH)
    text = lite.get("/metrics", headers=AUTH).text
    assert 'linewatch_api_requests_total{route="/v1/parts/{part}",status="404"}' in text
    assert "linewatch_api_classified_images_total" in text


def test_a_body_over_every_file_limit_is_refused_before_parsing(lite: TestClient) -> None:
    too_much = b"\xff\xd8\xff" + b"\x00" * (16 * 50_000 + 70_000)  # 16 files x 0.05 MB + slack
    response = post_files(lite, ("huge.jpg", too_much, "image/jpeg"))
    assert response.status_code == 413 and "upload limit" in response.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b"--b\r\nContent-Disposition: form-data; name=file; filename=x.jpg\r\n\r\n"
        for _ in range(100):
            yield b"\x00" * 10_000

    streamed = lite.post(
        "/v1/classify",
        headers={**AUTH, "Content-Type": "multipart/form-data; boundary=b"},
        content=chunks(),
    )
    assert streamed.status_code == 413


def test_api_settings_from_the_environment_keep_the_token_secret() -> None:
    settings = load_settings(
        environ={"LINEWATCH_API__TOKEN": "env-secret", "LINEWATCH_API__MAX_UPLOAD_MB": "2"}
    )
    assert settings.api.token is not None
    assert settings.api.token.get_secret_value() == "env-secret"
    assert settings.api.max_upload_mb == 2
    assert "env-secret" not in settings.model_dump_json() and "env-secret" not in repr(settings)
    with pytest.raises(ConfigError, match="unknown key 'api.tokn'"):
        load_settings(environ={}, overrides={"api": {"tokn": "x"}})


def test_a_model_folder_that_does_not_load_is_503_with_the_reason(
    sqlite_url: str, tmp_path: Path
) -> None:
    settings = api_settings(sqlite_url)
    broken = settings.model_copy(
        update={"inference": settings.inference.model_copy(update={"model_dir": tmp_path})}
    )
    client, context = make_client(broken, ModelHolder(broken))
    with client:
        response = post_files(client, ("a.png", png(tile()), "image/png"))
    context.engine.dispose()
    assert response.status_code == 503 and "holds no model" in response.json()["detail"]
