"""The dashboard in a real headless Chromium (Debian's chromium + chromium-driver through
Selenium; nothing downloads a browser): sign in, cameras, an NG part pushed over SSE
with its evidence crop, a review that lands in SQL, a screenshot checked."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from linewatch.api.app import ApiContext, build_context, create_app
from linewatch.pipeline.streams import broker
from linewatch.schemas.tables import PartReview
from tests.api_helpers import (
    TOKEN,
    insert_part,
    jpeg,
    line_settings,
    running_server,
    shared_models,
    tile,
    verdict_for,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
)

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
if not (CHROMIUM.exists() and (CHROMEDRIVER.exists() or shutil.which("chromedriver"))):
    pytest.skip(
        "needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver)",
        allow_module_level=True,
    )

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402


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


def test_dashboard_shows_cameras_a_live_ng_part_and_takes_a_review(
    line: tuple[str, ApiContext], browser: Any, redis_client: broker.Client, tmp_path: Path
) -> None:  # the server first, so the browser (and its event stream) goes before it stops
    url, context = line
    engine = context.engine
    insert_part(engine, part_id=1)
    insert_part(engine, part_id=2, camera_id="cam-b", verdict="defect", label="fray", score=0.8)
    sign_in(browser, url)

    rows = wait_for(lambda: len(camera_rows(browser)) == 2 and camera_rows(browser), "cameras")
    assert rows["cam-a"][5] == "v1" and rows["cam-b"][3] == "100.0 %"
    wait_for(lambda: browser.find_element(By.ID, "live").text == "live", "the SSE connection")

    crop = jpeg(cv2.resize(tile(5), (128, 128)))
    row = insert_part(engine, part_id=3, verdict="defect", label="crack", score=0.95, evidence=crop)
    redis_client.publish(context.settings.verdicts_channel, verdict_for("cam-a", 3).to_json())
    card = wait_for(
        lambda: browser.find_element(By.CSS_SELECTOR, f'#feed li[data-part="{row}"]'),
        "the NG part in the live feed",
    )
    image = card.find_element(By.TAG_NAME, "img")
    wait_for(lambda: int(image.get_attribute("naturalWidth")) == 128, "the evidence crop")
    assert "crack" in card.text and "cam-a" in card.text

    queued = wait_for(
        lambda: browser.find_element(By.CSS_SELECTOR, f'#queue li[data-part="{row}"]'),
        "the new NG part in the review queue",
    )
    queued.find_element(By.CSS_SELECTOR, "button.review-ok").click()
    wait_for(lambda: "reviewed ok by alice" in queued.text, "the review confirmation")
    with Session(engine) as session:
        (review,) = session.scalars(select(PartReview).where(PartReview.part_row_id == row))
    assert (review.verdict, review.label, review.reviewer) == ("ok", "free", "alice")
    assert review.machine_verdict == "defect"

    check_screenshot(browser, tmp_path / "dashboard.png")


def check_screenshot(driver: Any, path: Path) -> None:
    """A real rendering: a PNG of the window, not blank, with the header's dark band."""
    assert driver.save_screenshot(str(path))
    image = cv2.imread(str(path))
    assert image is not None and image.shape[1] >= 1000
    assert float(image.std()) > 10, "the screenshot is blank"
    header = image[5:30, :, :].mean(axis=(0, 1))
    assert header.max() < 90, f"the header band is not dark: {header}"
    assert np.count_nonzero(image.reshape(-1, 3).std(axis=1) > 30) > 50  # coloured pixels


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
