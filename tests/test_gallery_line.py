"""The gallery on a line: a real inference worker (real Paddle predictor, the synthetic
line model's embedding output) and a real sink on real Redis and SQLite.

The model folder is the synthetic line model (tests/line_model.py) with its gallery cut to
its `free` entries and every class normal to its classifier, so the verdicts here are the
gallery's alone (the classifier's primacy: tests/test_gallery_verdict.py): blowholes are
a defect kind the gallery does not cover, as a new kind on a real line. Its parts are
NG as `unknown`, clean tiles pass; reviewed as a new class (`pit`) and added with
`linewatch gallery add --from-reviews`, the next parts of that kind are NG as `pit`
without restarting the worker. A model folder without a gallery runs as before."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import Engine, text

from linewatch.api.app import build_context, create_app
from linewatch.pipeline import keys
from linewatch.pipeline.config import Settings
from linewatch.pipeline.gallery.folder import REVIEWS_FILE
from linewatch.pipeline.gallery.search import part_novelty, search
from linewatch.pipeline.gallery.store import GALLERY_FILE, load_gallery, save_gallery
from linewatch.pipeline.inference.classifier import Classifier
from linewatch.pipeline.inference.gallery import GalleryFollower
from linewatch.pipeline.runtime import StopFlag
from linewatch.pipeline.simulation.synthetic import make_tile
from linewatch.pipeline.storage import database as storage
from linewatch.pipeline.storage import parts_queries as queries
from linewatch.pipeline.streams import broker
from linewatch.pipeline.video.codec import encode_image
from linewatch.schemas.decisions import UNKNOWN_LABEL
from linewatch.schemas.messages import FrameMessage, PartView, ResultMessage
from linewatch.workers import inference, sink
from tests.support.api import AUTH, TOKEN, insert_part, running_server
from tests.support.builders import make_settings, part_end
from tests.support.services import add_entries, linewatch, wait_for

VIEWS = 3
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
# a folder of before galleries: one graph output, no Gallery section
PLAIN_MODEL = Path(__file__).resolve().parents[1] / "models" / "linewatch-tile-teacher"


def load(folder: Path) -> Classifier:
    model = Classifier(folder, threads=1, max_batch=8)
    model.warm_up()
    return model


def blind_copy(line_model: Path, folder: Path) -> Path:
    """The line model with a gallery of `free` only, a classifier that flags nothing and
    a novelty threshold set on calibration parts: midway, on a log scale, between the
    most novel of 12 clean parts and the least novel of 6 unknown ones (blowholes). The
    exported threshold is chosen on the training photos for the whole gallery; and the
    line model is trained anew in each test session, so its geometry varies: a
    threshold from the clean side alone (1.5 x) sat below a new blowhole's distance to
    the reviewed ones in one session of three."""
    shutil.copytree(line_model, folder)
    gallery = load_gallery(folder / GALLERY_FILE)
    free = gallery.where(gallery.labels == "free")
    save_gallery(folder / GALLERY_FILE, free)
    model = Classifier(folder, threads=1, max_batch=8)
    rng = np.random.default_rng(99)  # not the parts' draws

    def novelty(kind: str) -> float:
        embeddings = model.predict_with_embeddings(part_views(rng, kind))[1]
        return part_novelty(search(free, embeddings).novelty.tolist(), 2)

    clean = max(novelty("free") for _ in range(12))
    unknown = min(novelty("blowhole") for _ in range(6))
    assert clean < unknown, (clean, unknown)
    config = yaml.safe_load((folder / "inference.yml").read_text())
    config["Linewatch"]["normal_labels"] = config["PostProcess"]["label_list"]
    config["Gallery"]["novelty_threshold"] = round(float(np.sqrt(clean * unknown)), 6)
    (folder / "inference.yml").write_text(yaml.safe_dump(config))
    return folder


def part_views(rng: np.random.Generator, label: str) -> list[np.ndarray]:
    """A part's VIEWS views: one generated tile, each view with its own noise (RGB, 96 px)."""
    tile = make_tile(rng, label, 96).astype(np.float32)
    views = [np.clip(tile + rng.normal(0, 2, tile.shape), 0, 255) for _ in range(VIEWS)]
    return [np.dstack([view.astype(np.uint8)] * 3) for view in views]


@dataclass
class Line:
    settings: Settings
    database_url: str
    engine: Engine
    client: broker.Client
    worker: threading.Thread
    seq: int = 0

    def feed(self, rng: np.random.Generator, parts: list[tuple[int, str]]) -> None:
        """Each part as ingest sends it: VIEWS views (96 px JPEG crops) and its part end."""
        frames, ends = [], []
        for part_id, label in parts:
            first = self.seq + 1
            for index, view in enumerate(part_views(rng, label)):
                self.seq += 1
                frames.append(view_frame(self.seq, part_id, index, view))
            ends.append(part_end(part_id, VIEWS, first, self.seq).encode())
        add_entries(self.client, self.settings.frames_stream, frames)
        add_entries(self.client, self.settings.results_stream, ends)

    def parts(self, ids: list[int]) -> dict[int, dict]:  # type: ignore[type-arg]
        page = queries.list_parts(self.engine, queries.PartFilter(), 200, None)
        return {p["part_id"]: p for p in page.items if p["part_id"] in ids}

    def wait_parts(self, ids: list[int]) -> dict[int, dict]:  # type: ignore[type-arg]
        wait_for(lambda: len(self.parts(ids)) == len(ids), 120)
        return self.parts(ids)


def view_frame(seq: int, part_id: int, index: int, image: np.ndarray) -> dict[bytes, bytes]:
    now, (height, width) = time.time_ns(), image.shape[:2]
    box = PartView(part_id, index, 10 * index, 0, 10 * index + width, height)
    message = FrameMessage("cam", seq, seq / 10, now, now, width, height, "jpeg", b"", False, box)
    return FrameMessage(**{**message.__dict__, "image": encode_image(image, "jpeg")}).encode()


@pytest.fixture()
def line(line_model, tmp_path, sqlite_url, redis_client, redis_url, line_name) -> Iterator[Line]:  # type: ignore[no-untyped-def]
    folder = blind_copy(line_model, tmp_path / "model")
    settings = make_settings(
        tmp_path,
        line_name,
        redis_url,
        database_url=sqlite_url,
        inference={"model_dir": str(folder), "max_batch": 8, "threads": 1},
        verdict={"deadline_ms": 120_000},
    )
    engine = storage.open_database(sqlite_url)
    stop = StopFlag()
    worker = threading.Thread(
        target=inference.run,
        args=(redis_client, load(folder), settings, "w1", stop, load),
    )
    sinking = threading.Thread(target=sink.run, args=(redis_client, engine, settings, "s1", stop))
    broker.ensure_group(redis_client, settings.frames_stream, inference.GROUP)
    broker.ensure_group(redis_client, settings.results_stream, sink.GROUP)
    worker.start()
    sinking.start()
    yield Line(settings, sqlite_url, engine, redis_client, worker)
    stop.set()
    worker.join(30)
    sinking.join(30)
    engine.dispose()


def env_of(line: Line, redis_url: str) -> dict[str, str]:
    settings = line.settings
    return {
        "LINEWATCH_REDIS_URL": redis_url,
        "LINEWATCH_LINE": settings.line,
        "LINEWATCH_DATABASE_URL": line.database_url,
        "LINEWATCH_INFERENCE__MODEL_DIR": str(settings.inference.model_dir),
        "LINEWATCH_INFERENCE__THREADS": "1",
    }


def test_an_unknown_kind_is_flagged_then_learned_from_reviews_without_a_restart(
    line: Line, redis_url: str
) -> None:
    rng = np.random.default_rng(4)
    section = yaml.safe_load((line.settings.inference.model_dir / "inference.yml").read_text())
    threshold = float(section["Gallery"]["novelty_threshold"])
    kinds = ["free", "blowhole", "blowhole", "free", "blowhole", "blowhole", "free"]
    kinds += ["blowhole", "blowhole", "blowhole", "free", "blowhole"]
    first = list(enumerate(kinds, start=1))
    line.feed(rng, first)
    parts = line.wait_parts([p for p, _ in first])
    for part_id, kind in first:
        part = parts[part_id]
        if kind == "free":  # clean tiles pass
            assert (part["verdict"], part["label"]) == ("ok", "free"), part
            assert part["novelty"] < threshold and part["gallery_label"] == "free"
        elif part["label"] == UNKNOWN_LABEL:
            assert part["verdict"] == "defect" and part["novelty"] >= threshold
            assert part["evidence_url"] is not None, "the most novel view's crop"
    holes = [parts[p] for p, kind in first if kind == "blowhole"]
    flagged = [p for p in holes if p["label"] == UNKNOWN_LABEL]
    assert len(flagged) >= 6, holes  # of 8: a blowhole of a few pixels may pass as free
    with line.engine.connect() as connection:
        views = connection.execute(
            text("SELECT COUNT(*) FROM detections WHERE novelty IS NOT NULL")
        ).scalar()
    assert views == VIEWS * len(first), "every view carries its novelty"

    api_settings = line.settings.api.model_copy(update={"token": SecretStr(TOKEN)})
    context = build_context(line.settings.model_copy(update={"api": api_settings}))
    with TestClient(create_app(context)) as api:
        assert api.get("/v1/model", headers=AUTH).json()["gallery"] is True
        unknown = [p["id"] for p in flagged]
        bad = api.post(
            f"/v1/parts/{unknown[0]}/review",
            headers=AUTH,
            json={"verdict": "defect", "label": "Pit!"},
        )
        assert bad.status_code == 422 and "new class" in bad.json()["detail"]
        for row_id in unknown:
            reviewed = api.post(
                f"/v1/parts/{row_id}/review",
                headers=AUTH,
                json={"verdict": "defect", "label": "pit"},
            )
            assert reviewed.status_code == 201, reviewed.text

        env = env_of(line, redis_url)
        added = linewatch("gallery", "add", "--from-reviews", env=env, timeout=300)
        assert added.returncode == 0, added.stderr
        assert f"added pit {len(unknown)}" in added.stdout and "revision 1" in added.stdout
        again = api.post("/v1/gallery/reviews", headers=AUTH, json={})
        assert again.status_code == 200, again.text
        assert again.json()["added"] == {} and again.json()["already"] == len(unknown)
        shown = linewatch("gallery", "show", env=env)
        assert shown.returncode == 0, shown.stderr
        rows = [[cell.strip() for cell in row.split("│")] for row in shown.stdout.splitlines()]
        assert ["", "pit", "0", str(len(unknown)), ""] in rows, shown.stdout
    context.engine.dispose()

    later = [(20 + i, kind) for i, kind in enumerate(["blowhole"] * 6 + ["free"] * 2)]
    line.feed(rng, later)
    parts = line.wait_parts([p for p, _ in later])
    assert line.worker.is_alive(), "the same worker, never restarted"
    assert [(parts[p]["verdict"], parts[p]["label"]) for p in (26, 27)] == [("ok", "free")] * 2
    learned = [parts[p] for p, kind in later if kind == "blowhole"]
    pits = [p for p in learned if p["label"] == "pit"]
    assert len(pits) >= 4, [(p["label"], p["gallery_label"], p["novelty"]) for p in learned]
    for part in pits:  # NG as the reviewed class: near its entries now, not novel
        assert (part["verdict"], part["gallery_label"]) == ("defect", "pit")
        assert part["novelty"] < threshold and part["evidence_url"] is not None


def test_a_model_without_a_gallery_runs_as_before(
    redis_client, redis_url, line_name, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(
        tmp_path, line_name, redis_url, inference={"model_dir": str(PLAIN_MODEL)}
    )
    model = Classifier(PLAIN_MODEL, threads=1, max_batch=4)
    assert model.info.gallery is None and model.embedding_size is None
    handler = inference.FrameBatchHandler(
        redis_client,
        model,
        settings,
        "w1",
        gallery=GalleryFollower(lambda version: 0),
        model_dir=PLAIN_MODEL,
    )
    tile = np.dstack([make_tile(np.random.default_rng(1), "crack", 160)] * 3)
    broker.ensure_group(redis_client, settings.frames_stream, inference.GROUP)
    add_entries(redis_client, settings.frames_stream, [view_frame(1, 1, 0, tile)])
    entries = broker.read_group(
        redis_client, settings.frames_stream, inference.GROUP, "w1", 10, None
    )
    handler.handle(entries)
    [(_, fields)] = redis_client.xrange(settings.results_stream)
    result = ResultMessage.decode(fields)
    assert b"novelty" not in fields and b"gallery_label" not in fields
    assert (result.novelty, result.gallery_label, result.status) == (None, None, "ok")


def test_the_dashboard_button_adds_reviewed_parts_to_the_gallery(
    line_model, tmp_path, sqlite_url, redis_client, redis_url, line_name
) -> None:  # type: ignore[no-untyped-def]
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("needs Debian's chromium and chromium-driver")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    folder = blind_copy(line_model, tmp_path / "model")
    settings = make_settings(
        tmp_path,
        line_name,
        redis_url,
        database_url=sqlite_url,
        inference={"model_dir": str(folder)},
        api={"token": TOKEN, "user": "alice"},
    )
    context = build_context(settings)
    crop = encode_image(
        np.dstack([make_tile(np.random.default_rng(2), "blowhole", 96)] * 3), "jpeg"
    )
    row_id = insert_part(context.engine, part_id=9, camera_id="cam", evidence=crop)
    queries.add_review(context.engine, row_id, "alice", "defect", "pit")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        with running_server(create_app(context)) as url:
            driver.get(url + "/")
            wait_for(lambda: driver.find_element(By.ID, "sign-in").is_displayed(), 20)
            driver.find_element(By.ID, "token").send_keys(TOKEN)
            driver.find_element(By.CSS_SELECTOR, "#sign-in-form button").click()
            button = driver.find_element(By.ID, "gallery-add-button")
            wait_for(button.is_displayed, 20)
            button.click()
            result = driver.find_element(By.ID, "gallery-add-result")
            wait_for(lambda: "added pit 1" in result.text, 60)
    finally:
        driver.quit()
        context.engine.dispose()
    reviewed = load_gallery(folder / REVIEWS_FILE)
    assert reviewed.labels.tolist() == ["pit"] * 8, "the crop, mirrored and turned"
    assert reviewed.sources.tolist() == [f"review:cam/9#{view}" for view in range(8)]
    assert redis_client.hget(keys.gallery(line_name), line_model_version(folder)) == b"1"


def line_model_version(folder: Path) -> str:
    return str(yaml.safe_load((folder / "inference.yml").read_text())["Global"]["model_version"])
