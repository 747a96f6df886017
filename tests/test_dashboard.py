"""The dashboard in a real headless Chromium (Debian's chromium + chromium-driver through
Selenium; nothing downloads a browser) against a running line (`linewatch run` with its
API): sign in, cameras, an NG part pushed live over SSE with its evidence crop, a review
that lands in SQL, a screenshot checked."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from linewatch.api.app import ApiContext, build_context, create_app
from linewatch.line import run_line
from linewatch.pipeline import keys
from linewatch.pipeline.simulation.moving_line import MovingLineSpec, simulate_moving
from linewatch.pipeline.storage import database
from linewatch.pipeline.streams import preview_store
from linewatch.pipeline.video.preview import Preview, PreviewBox
from linewatch.schemas.tables import Alert, Detection, Part, PartReview
from tests.support.api import (
    MODEL_DIR,
    TOKEN,
    insert_part,
    line_settings,
    line_with_api,
    running_server,
    shared_models,
)
from tests.support.builders import make_settings

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1400,1200",
)

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
if not (CHROMIUM.exists() and (CHROMEDRIVER.exists() or shutil.which("chromedriver"))):
    pytest.skip(
        "needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver)",
        allow_module_level=True,
    )

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402


@pytest.fixture()
def browser() -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    driver_path = str(CHROMEDRIVER if CHROMEDRIVER.exists() else shutil.which("chromedriver"))
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture()
def line(sqlite_url: str, redis_url: str, line_name: str) -> Iterator[tuple[str, ApiContext]]:
    context = build_context(line_settings(sqlite_url, redis_url, line_name))
    context.models = shared_models()
    with running_server(create_app(context)) as url:
        yield url, context
    context.engine.dispose()


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except Exception:  # the page is still building: try again
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def sign_in(driver: Any, url: str) -> None:
    driver.get(url + "/")
    wait_for(lambda: driver.find_element(By.ID, "sign-in").is_displayed(), "the sign-in form")
    driver.find_element(By.ID, "token").send_keys(TOKEN)
    driver.find_element(By.CSS_SELECTOR, "#sign-in-form button").click()
    wait_for(lambda: driver.find_element(By.TAG_NAME, "body").get_attribute("data-ready"), "ready")


def camera_rows(driver: Any) -> dict[str, list[str]]:
    rows = driver.find_elements(By.CSS_SELECTOR, "#cameras tbody tr")
    return {
        row.get_attribute("data-camera"): [c.text for c in row.find_elements(By.TAG_NAME, "td")]
        for row in rows
    }


def camera_seen(row: list[str]) -> bool:
    """The row shows the camera's ingest state (from Redis) and the model version."""
    return row[1] in ("streaming", "stopped") and row[5] not in ("", "-")


def test_dashboard_on_a_running_line_shows_a_live_ng_part_and_takes_a_review(
    tmp_path: Path, browser: Any
) -> None:
    with line_with_api(tmp_path) as line:
        sign_in(browser, line.url)
        wait_for(lambda: browser.find_element(By.ID, "live").text == "live", "the SSE connection")
        part = int(wait_for(lambda: browser.execute_script(LOADED_NG_PART), "a live NG part"))
        card = browser.find_element(By.CSS_SELECTOR, f'#feed li[data-part="{part}"]')
        assert "cam1" in card.text
        # the camera table is refreshed when verdicts arrive; the replay may have ended
        wait_for(lambda: camera_seen(camera_rows(browser)["cam1"]), "cam1's state and model")
        wait_for(lambda: browser.execute_script(CHART_HOURS) > 0, "the chart with parts")

        queued = browser.find_element(By.CSS_SELECTOR, f'#queue li[data-part="{part}"]')
        queued.find_element(By.CSS_SELECTOR, "button.review-ok").click()
        wait_for(lambda: "reviewed ok by alice" in queued.text, "the review confirmation")
        check_screenshot(browser, tmp_path / "dashboard.png", card)
        card.find_element(By.TAG_NAME, "img").click()  # opens the part, heat map and all
        wait_for(lambda: browser.execute_script(DIALOG_IMAGE, "heatmap"), "the heat map", 60)
        engine = database.open_database(line.database_url)
        with Session(engine) as session:
            (review,) = session.scalars(select(PartReview).where(PartReview.part_row_id == part))
        engine.dispose()
        output = line.stop()
    assert (review.verdict, review.label, review.reviewer) == ("ok", "free", "alice")
    assert review.machine_verdict in ("defect", "uninspected")
    assert TOKEN not in output


# The row id of the newest live NG card whose evidence crop has loaded, else null.
LOADED_NG_PART = """
const cards = [...document.querySelectorAll('#feed li[data-part]')];
const loaded = cards.find((li) => li.dataset.part && li.querySelector('img')?.naturalWidth > 0);
return loaded ? loaded.dataset.part : null;
"""
DIALOG_IMAGE = """
const img = document.getElementById(`part-${arguments[0]}`);
return img.src !== '' && img.complete && img.naturalWidth > 0;
"""
CHART_HOURS = "return Number(document.getElementById('ng-chart').dataset.hours || 0);"
RED_BGR = np.array([40, 40, 198])  # the chart's bars, #c62828


def check_screenshot(driver: Any, path: Path, card: Any) -> None:
    """A real rendering: not blank, the header's dark band, the NG-rate chart's red bars
    drawn, the live card's evidence crop painted (not the empty grey box)."""
    assert driver.save_screenshot(str(path))
    image = cv2.imread(str(path))
    assert image is not None and image.shape[1] >= 1000
    assert float(image.std()) > 10, "the screenshot is blank"
    header = image[5:30, :, :].mean(axis=(0, 1))
    assert header.max() < 90, f"the header band is not dark: {header}"
    chart = crop(image, driver.find_element(By.ID, "ng-chart"))
    red = np.count_nonzero(np.abs(chart.astype(int) - RED_BGR).max(axis=2) < 30)
    assert red > 200, f"the chart shows {red} red pixels: no NG-rate bar drawn"
    crop_pixels = crop(image, card.find_element(By.TAG_NAME, "img"))
    assert float(crop_pixels.std()) > 5, "the evidence crop is not painted"


def crop(image: np.ndarray, element: Any) -> np.ndarray:
    """The screenshot's pixels under an element (the window is large enough to hold it)."""
    box = element.rect
    x, y = int(box["x"]), int(box["y"])
    region = image[y : y + int(box["height"]), x : x + int(box["width"])]
    assert region.size, f"element at {box} is outside the {image.shape} screenshot"
    return region


def test_dashboard_refuses_a_wrong_token(line: tuple[str, ApiContext], browser: Any) -> None:
    url, _ = line
    browser.get(url + "/")
    wait_for(lambda: browser.find_element(By.ID, "sign-in").is_displayed(), "the sign-in form")
    browser.find_element(By.ID, "token").send_keys("not-it")
    browser.find_element(By.CSS_SELECTOR, "#sign-in-form button").click()
    wait_for(lambda: browser.find_element(By.ID, "sign-in-error").text == "wrong token", "error")
    assert not browser.find_element(By.ID, "dashboard").is_displayed()


def test_the_dashboard_loads_nothing_from_other_hosts(line: tuple[str, ApiContext]) -> None:
    static = Path(__file__).resolve().parents[1] / "linewatch" / "api" / "static"
    for path in static.iterdir():
        text = path.read_text()
        assert "http://" not in text and "https://" not in text, f"{path.name} names a host"


def test_a_dashboard_opened_after_the_parts_passed_lists_them(
    line: tuple[str, ApiContext], browser: Any
) -> None:
    """An operator who opens the page after a shift change sees the rejected parts and
    the alerts from SQL, newest first, before any live event arrives."""
    url, context = line
    rejected = {
        insert_part(context.engine, camera_id="cam1", part_id=1, verdict="defect", label="crack"),
        insert_part(context.engine, camera_id="cam1", part_id=2, verdict="uninspected"),
        insert_part(context.engine, camera_id="cam2", part_id=3, verdict="defect", label="fray"),
    }
    passed = insert_part(context.engine, camera_id="cam1", part_id=4)
    with Session(context.engine) as session, session.begin():
        session.add(
            Alert(
                camera_id="cam2",
                label="fray",
                state="raised",
                opened_seq=30,
                opened_ts=1,
                raised_ts=2,
                peak_score=0.93,
                frames=1,
                kind="part",
                part_id=3,
            )
        )
    sign_in(browser, url)
    shown = [
        int(li.get_attribute("data-part"))
        for li in browser.find_elements(By.CSS_SELECTOR, "#feed li[data-part]")
    ]
    assert shown == sorted(rejected, reverse=True), "the rejected parts, newest first"
    assert passed not in shown
    assert not browser.find_element(By.ID, "feed-empty").is_displayed()
    (alert,) = browser.find_elements(By.CSS_SELECTOR, "#alerts li")
    assert "cam2" in alert.text and "fray" in alert.text


SCREENSHOT_DIR_ENV = "LINEWATCH_SCREENSHOT_DIR"  # set: the live-view screenshot is kept there


def put_live_view(context: ApiContext, camera: str) -> None:
    """A camera's live view in Redis as ingest keeps it: a frame with two part boxes."""
    frame = np.full((240, 320, 3), 45, np.uint8)
    frame[40:130, 30:120] = 150
    frame[60:150, 180:270] = 120
    ok, jpeg = cv2.imencode(".jpg", frame)
    boxes = (PreviewBox(30, 40, 120, 130, 1), PreviewBox(180, 60, 270, 150, 2))
    assert context.redis is not None
    key = context.settings.camera_key(camera, keys.PREVIEW)
    preview_store.put(context.redis, key, Preview(jpeg.tobytes(), boxes, 1).encode(), 60)


def test_the_live_view_shows_each_camera_with_verdict_coloured_boxes(
    line: tuple[str, ApiContext], browser: Any, tmp_path: Path
) -> None:
    url, context = line
    put_live_view(context, "cam-a")
    insert_part(context.engine, camera_id="cam-a", part_id=1, verdict="defect", label="crack")
    insert_part(context.engine, camera_id="cam-a", part_id=2, verdict="ok")
    sign_in(browser, url)
    tile = wait_for(
        lambda: browser.find_element(By.CSS_SELECTOR, '#live-tiles figure[data-camera="cam-a"]'),
        "cam-a's tile",
    )
    wait_for(lambda: browser.execute_script(TILE_LOADED, "cam-a"), "cam-a's live frame")
    shot = Path(os.environ.get(SCREENSHOT_DIR_ENV, tmp_path)) / "dashboard-live.png"
    assert browser.save_screenshot(str(shot))
    image = cv2.imread(str(shot))
    pixels = crop(image, tile.find_element(By.TAG_NAME, "img")).astype(int)
    red = np.count_nonzero(np.abs(pixels - np.array([38, 38, 220])).max(axis=2) < 60)
    green = np.count_nonzero(np.abs(pixels - np.array([67, 160, 46])).max(axis=2) < 60)
    assert red > 100 and green > 100, f"the NG box red ({red} px), the OK box green ({green} px)"
    tile.click()
    wait_for(lambda: browser.find_element(By.ID, "live-large").is_displayed(), "the large view")
    source = browser.find_element(By.ID, "live-large-img").get_attribute("src")
    assert source.endswith("/v1/cameras/cam-a/live.mjpg")
    camera_b = browser.find_element(By.CSS_SELECTOR, '#live-tiles figure[data-camera="cam-b"]')
    wait_for(lambda: "no-view" in camera_b.get_attribute("class"), "cam-b without a view")


TILE_LOADED = """
const img = document.querySelector(`#live-tiles figure[data-camera="${arguments[0]}"] img`);
return img && img.complete && img.naturalWidth > 0;
"""


# --- the part dialog ----------------------------------------------------------------


def finished_line(tmp_path: Path, redis_url: str, line: str) -> str:
    """A moving line with NG parts run to its end by real ingest, inference and sink
    processes (the shipped model); returns its database URL."""
    spec = MovingLineSpec(parts=10, defect_rate=0.5, seed=3)
    ((video, _, _),) = simulate_moving(tmp_path / "video", spec)
    database_url = f"sqlite:///{tmp_path / 'line.db'}"
    camera = {"id": "cam1", "url": str(video), "parts": {"method": "contrast", "merge_gap": 64}}
    settings = make_settings(
        tmp_path,
        line,
        redis_url,
        database_url=database_url,
        cameras=[camera],
        inference={"model_dir": str(MODEL_DIR)},
    )
    stats = run_line(settings)
    assert stats.inferred == stats.written and stats.dead_letters == 0, stats
    return database_url


def newest_defect(engine: Any) -> Part:
    with Session(engine) as session:
        part = session.scalars(
            select(Part)
            .where(Part.verdict == "defect", Part.evidence.is_not(None))
            .order_by(Part.id.desc())
            .limit(1)
        ).first()
        assert part is not None, "the line rejected no part"
        session.expunge(part)
    return part


def stored_views(engine: Any, part: Part) -> int:
    with Session(engine) as session:
        return int(
            session.scalar(
                select(func.count(func.distinct(Detection.view_index))).where(
                    Detection.camera_id == part.camera_id, Detection.part_id == part.part_id
                )
            )
            or 0
        )


def test_an_ng_card_opens_its_part_views_images_and_takes_a_review(
    tmp_path: Path, browser: Any, redis_url: str, line_name: str
) -> None:
    """On a finished line: a click on an NG card opens the part with every stored view
    and its score, the evidence crop and its heat map; a review from the dialog lands in
    SQL and shows in the dialog and on the card; Escape closes it."""
    database_url = finished_line(tmp_path, redis_url, line_name)
    context = build_context(line_settings(database_url, redis_url, line_name))
    context.models = shared_models()
    part = newest_defect(context.engine)
    views = stored_views(context.engine, part)
    assert views >= 2 and views == part.views_inferred
    with running_server(create_app(context)) as url:
        sign_in(browser, url)
        card = browser.find_element(By.CSS_SELECTOR, f'#feed li[data-part="{part.id}"]')
        card.click()
        dialog = browser.find_element(By.ID, "part-dialog")
        wait_for(dialog.is_displayed, "the part dialog")
        title = browser.find_element(By.ID, "part-title")
        wait_for(lambda: f"part {part.part_id}" in title.text, "the part's title")
        assert "cam1" in title.text
        rows = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, ROWS), "the views")
        assert len(rows) == views, f"{len(rows)} view rows for {views} stored views"
        assert browser.find_elements(By.CSS_SELECTOR, f"{ROWS} td.over"), "no view over threshold"
        facts = browser.find_element(By.ID, "part-facts").text
        assert "defect" in facts and f"{part.score:.3f}" in facts and "threshold" in facts
        wait_for(lambda: browser.execute_script(DIALOG_IMAGE, "evidence"), "the evidence crop")
        wait_for(lambda: browser.execute_script(DIALOG_IMAGE, "heatmap"), "the heat map", 60)
        check_part_screenshot(browser, tmp_path)

        choice = next(lb for lb in ("crack", "break", "fray") if lb != part.label)
        Select(browser.find_element(By.ID, "part-class")).select_by_value(choice)
        browser.find_element(By.ID, "part-note").send_keys("seen under the lamp")
        browser.find_element(By.ID, "part-correct").click()
        history = browser.find_element(By.ID, "part-reviews")
        wait_for(lambda: f"alice: defect ({choice})" in history.text, "the review in the dialog")
        assert "seen under the lamp" in history.text
        assert f"reviewed defect by alice ({choice})" in card.text
        # the shipped model has a gallery: a defect kind it has no class for can be named
        browser.find_element(By.ID, "part-new-class").send_keys("chip")
        browser.find_element(By.ID, "part-correct").click()
        wait_for(lambda: "alice: defect (chip)" in history.text, "the new class's review")
        browser.switch_to.active_element.send_keys(Keys.ESCAPE)
        wait_for(lambda: not dialog.is_displayed(), "the dialog closed by Escape")
    with Session(context.engine) as session:
        review, named = session.scalars(
            select(PartReview).where(PartReview.part_row_id == part.id).order_by(PartReview.id)
        )
    context.engine.dispose()
    assert (review.verdict, review.label, review.reviewer) == ("defect", choice, "alice")
    assert (named.verdict, named.label) == ("defect", "chip")
    assert review.note == "seen under the lamp" and review.machine_verdict == "defect"


ROWS = "#part-views tbody tr"


def check_part_screenshot(driver: Any, tmp_path: Path) -> None:
    """The open dialog as rendered: not blank, the crop painted, the heat map coloured
    (its colour map differs from the grey crop), one table row per view drawn."""
    shot = Path(os.environ.get(SCREENSHOT_DIR_ENV, tmp_path)) / "dashboard-part.png"
    assert driver.save_screenshot(str(shot))
    image = cv2.imread(str(shot))
    assert image is not None and float(image.std()) > 10, "the screenshot is blank"
    crop_pixels = crop(image, driver.find_element(By.ID, "part-evidence")).astype(int)
    heat = crop(image, driver.find_element(By.ID, "part-heatmap")).astype(int)
    assert float(crop_pixels.std()) > 5, "the evidence crop is not painted"
    saturation = (heat.max(axis=2) - heat.min(axis=2)).mean()
    assert saturation > 20, f"the heat map shows no colour (mean saturation {saturation:.1f})"
    table = crop(image, driver.find_element(By.ID, "part-views"))
    assert float(table.std()) > 10, "the views table is not drawn"


def test_the_part_dialog_says_what_is_missing_and_when_the_session_is_gone(
    line: tuple[str, ApiContext], browser: Any
) -> None:
    """A review-queue item opens its part too; a part without views or crop says so; a
    part pruned since the page loaded (404) and a request refused for want of a token
    (401) show their status and what to do, in the dialog."""
    url, context = line
    bare = insert_part(context.engine, camera_id="cam1", part_id=1, verdict="uninspected")
    other = insert_part(context.engine, camera_id="cam1", part_id=2, verdict="defect")
    gone = insert_part(context.engine, camera_id="cam1", part_id=3, verdict="defect")
    sign_in(browser, url)
    queued = browser.find_element(By.CSS_SELECTOR, f'#queue li[data-part="{bare}"]')
    queued.find_element(By.CSS_SELECTOR, "button.open-part").click()  # a review-queue item
    title = browser.find_element(By.ID, "part-title")
    wait_for(lambda: title.text == "cam1 · part 1", "the queued part's dialog")
    note = browser.find_element(By.ID, "part-views-note")
    wait_for(lambda: note.text == "(no views stored)", "no views said")
    assert browser.find_element(By.ID, "part-evidence-note").text == "no evidence crop stored"
    assert not browser.find_element(By.ID, "part-confirm").is_enabled(), "no class to confirm"
    assert browser.find_element(By.ID, "part-ok").is_enabled()
    browser.find_element(By.CSS_SELECTOR, "#part-dialog .dialog-bar button").click()
    with Session(context.engine) as session, session.begin():  # pruned since the page loaded
        session.execute(delete(Part).where(Part.id == gone))
    browser.find_element(By.CSS_SELECTOR, f'#feed li[data-part="{gone}"]').click()
    error = browser.find_element(By.ID, "part-error")
    wait_for(lambda: error.text == f"404: no part with id {gone}", "the 404 in the dialog")
    browser.find_element(By.CSS_SELECTOR, "#part-dialog .dialog-bar button").click()
    browser.delete_all_cookies()  # the session is gone (the token rotated)
    browser.find_element(By.CSS_SELECTOR, f'#feed li[data-part="{other}"]').click()
    wait_for(lambda: "401" in error.text, "the 401 in the dialog")
    assert "sign in again" in error.text
