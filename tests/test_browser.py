"""A real headless Chromium drives the page: upload an example, paint, click the era map, paint again.

Screenshots (1366x768 viewport, full page) go to tests/artifacts/. With MVNET_UPDATE_SCREENSHOTS=1 the
Paint and Explore screenshots are also copied to docs/screenshots/ for the README (run it with real
weights: MVNET_TEST_WEIGHTS=weights).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_app import EXAMPLES, app_module, launch

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
VIEWPORT = {"width": 1366, "height": 768}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (apt-get install chromium)"),
]


@pytest.fixture(scope="module")
def page():
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    app = app_module()
    url = launch(app)
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport=VIEWPORT)
        context.grant_permissions(["microphone"])
        tab = context.new_page()
        tab.set_default_timeout(60_000)
        tab.goto(url)
        tab.get_by_text("MVNet — music to paintings").wait_for()
        yield tab
        browser.close()
    app.demo.close()


def images_in(page, element_id: str) -> int:
    return page.evaluate(f"document.querySelectorAll('#{element_id} img').length")


def shoot(page, name: str) -> Path:
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("MVNET_UPDATE_SCREENSHOTS") == "1":  # 256-colour PNG: a third of the size, same look
        from PIL import Image

        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as image:
            small = image.convert("RGB").quantize(256, method=Image.Quantize.MAXCOVERAGE)
            small.save(SCREENSHOTS / f"{name}.png", optimize=True)
    return path


def test_upload_an_example_and_paint(page):
    page.locator("#music input[type=file]").set_input_files(str(EXAMPLES / "baroque.ogg"))
    page.get_by_text("0:09").first.wait_for()  # the waveform player shows the clip's length
    page.get_by_role("button", name="Paint", exact=True).click()
    page.wait_for_function("document.querySelectorAll('#paint-gallery img').length >= 9")
    assert images_in(page, "paint-gallery") == 9
    assert "Embedded 1 window of 8.91 s" in page.locator("#paint-status").inner_text()
    page.locator("#era-map img").wait_for()
    page.locator("#mel img").wait_for()
    page.wait_for_timeout(500)  # let images finish decoding before the screenshot
    shoot(page, "paint")


def test_click_the_era_map_and_see_new_paintings(page):
    page.get_by_role("tab", name="Explore the era map").click()
    era_map = page.locator("#explore-map img")
    era_map.wait_for()
    assert images_in(page, "explore-gallery") == 0
    def map_loaded():  # the map is replaced after each click; click only a fully loaded one
        page.wait_for_timeout(300)
        page.wait_for_function("(() => { const i = document.querySelector('#explore-map img');"
                               " return i && i.complete && i.naturalWidth > 0; })()")

    map_loaded()
    box = era_map.bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.55)
    page.wait_for_function("document.querySelectorAll('#explore-gallery img').length >= 9")
    status = page.get_by_text("Painted 9 images from the point")
    status.wait_for()
    first = status.inner_text()
    map_loaded()
    page.mouse.click(box["x"] + box["width"] * 0.7, box["y"] + box["height"] * 0.3)
    page.wait_for_function(f"!document.body.innerText.includes({json.dumps(first)})")  # a new point was painted
    assert images_in(page, "explore-gallery") == 9
    page.get_by_role("button", name="Morph").click()  # a strip of 8 paintings from renaissance to modern
    page.wait_for_function("document.querySelectorAll('#morph-strip img').length >= 8")
    page.get_by_text("Morph from renaissance to modern").wait_for()
    page.wait_for_timeout(500)
    shoot(page, "explore")


def test_train_and_about_tabs_render(page):
    page.get_by_role("tab", name="Train").click()
    page.get_by_role("button", name="Start training").wait_for()
    shoot(page, "train")
    page.get_by_role("tab", name="About").click()
    page.get_by_text("Model card metrics").wait_for()
    shoot(page, "about")


def test_train_tab_follows_the_chosen_sampling(page):
    """Picking the report's sampling sets its epochs and learning rate (15, 5e-5); a batched one sets ours back."""
    page.get_by_role("tab", name="Train").click()
    lr = page.get_by_label("Learning rate (0 = the sampling's default)")
    epochs = page.locator("#encoder-epochs input")
    assert float(lr.input_value()) == pytest.approx(1e-3) and epochs.input_value() == "30"
    page.locator("#sampling input[value=paper]").check()
    page.wait_for_function("() => [...document.querySelectorAll('input[type=number]')]"
                           ".some(e => Math.abs(Number(e.value) - 5e-5) < 1e-9)")
    assert float(lr.input_value()) == pytest.approx(5e-5) and epochs.input_value() == "15"
    page.locator("#sampling input[value=batch-hard]").check()
    page.wait_for_function("() => [...document.querySelectorAll('input[type=number]')]"
                           ".some(e => Math.abs(Number(e.value) - 1e-3) < 1e-9)")
    assert float(lr.input_value()) == pytest.approx(1e-3) and epochs.input_value() == "30"


def test_record_with_the_fake_microphone_and_paint(page):
    """Chromium's fake capture device plays beeps; a 4 s recording is looped to one window and painted."""
    page.get_by_role("tab", name="Paint from music").click()
    music = page.locator("#music")
    music.locator("button[aria-label='Clear']").first.click()
    music.locator("button[aria-label='Record audio']").click()
    music.locator("button", has_text="Record").first.click()
    page.wait_for_timeout(4000)
    music.locator("button", has_text="Stop").first.click()
    # The recording has reached the server once the player offers its download link.
    music.locator("a[href*='gradio_api/file='][href$='.wav']").first.wait_for(state="attached")
    before = page.locator("#paint-status").inner_text()
    page.get_by_role("button", name="Paint", exact=True).click()
    page.wait_for_function(f"!document.querySelector('#paint-status').innerText.includes({json.dumps(before)})")
    status = page.locator("#paint-status").inner_text()
    assert "looped to fill one window" in status and images_in(page, "paint-gallery") == 9


def test_pick_a_bundled_example_and_paint(page):
    page.get_by_role("tab", name="Paint from music").click()
    before = page.locator("#paint-status").inner_text()
    page.get_by_role("button", name="romantic.ogg").click()
    page.locator("#music a[href*='romantic.ogg']").first.wait_for(state="attached")
    page.get_by_role("button", name="Paint", exact=True).click()
    page.wait_for_function(f"!document.querySelector('#paint-status').innerText.includes({json.dumps(before)})")
    assert "Embedded 1 window of 8.91 s" in page.locator("#paint-status").inner_text()
