"""The dashboard in a real headless Chromium (Debian's chromium + chromium-driver through
Selenium; nothing downloads a browser) against a running line (`linewatch run` with its
API): sign in, cameras, an NG part pushed live over SSE with its evidence crop, a review
that lands in SQL, a screenshot checked."""

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
from linewatch.pipeline.storage import database
from linewatch.schemas.tables import PartReview
from tests.api_helpers import TOKEN, line_settings, line_with_api, running_server, shared_models

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
        card.find_element(By.TAG_NAME, "img").click()  # the crop becomes its heat map
        wait_for(lambda: browser.execute_script(HEAT_MAP_SHOWN, str(part)), "the heat map")
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
HEAT_MAP_SHOWN = """
const img = document.querySelector(`#feed li[data-part="${arguments[0]}"] img`);
return img.src.endsWith('/heatmap.jpg') && img.complete && img.naturalWidth > 0;
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
