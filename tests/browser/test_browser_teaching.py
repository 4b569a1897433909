"""Chromium: presentation mode at 1280x720 (light and dark, screenshots to look at), the copy link, downloads."""
from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pandas as pd
import pytest
from browser_tools import heatmap_data, heatmap_frame, shot, wait_for_app

TEXT = "The animal didn't cross the street because it was too tired."


@pytest.fixture
def settled(page, app_url):
    """Open the app's root once: a fresh server guesses an old-style multipage app until app.py has run."""
    page.goto(f"{app_url}/")
    wait_for_app(page, timeout=180_000)
    return page


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_presentation_mode_1280x720(settled, app_url, scheme):
    page = settled
    page.set_viewport_size({"width": 1280, "height": 720})
    page.emulate_media(color_scheme=scheme)
    page.goto(f"{app_url}/attention_math?present=1&layer=3&head=1&query=it")
    wait_for_app(page, timeout=180_000)
    # The style arrives with the page's script run (the first run of a fresh session may rerun once).
    page.wait_for_function("getComputedStyle(document.documentElement).fontSize === '21px'", timeout=30_000)
    # The sidebar folds away with a slide animation: wait for it to end (it is off screen or zero wide).
    page.wait_for_function("""() => {
        const bar = document.querySelector("[data-testid='stSidebar']");
        if (!bar) return true;
        const box = bar.getBoundingClientRect();
        return box.right <= 50 || box.width < 50;
    }""", timeout=10_000)
    check = page.get_by_text("max |softmax(ours) − model's weights|")
    assert check.is_visible()
    page.screenshot(path=shot_path(f"present_math_{scheme}"))
    # the query token is big enough to read from the back of a room
    size = page.evaluate("parseFloat(getComputedStyle(document.querySelector('h1')).fontSize)")
    assert size >= 40
    page.goto(f"{app_url}/heatmap?present=1&layer=3&head=1")
    wait_for_app(page, timeout=180_000)
    frame = heatmap_frame(page)
    frame.locator("#hm").scroll_into_view_if_needed()
    tick_px = heatmap_data(frame)["font"]
    frame_height = frame.locator("#hm").bounding_box()["height"]
    page.screenshot(path=shot_path(f"present_heatmap_{scheme}"))
    page.evaluate("document.querySelector('[data-testid=stMain]').scrollTo(0, 0)")
    page.get_by_role("button", name="Exit presentation mode").click()
    wait_for_app(page)
    assert "present=1" not in page.url
    page.wait_for_function("getComputedStyle(document.documentElement).fontSize !== '21px'", timeout=30_000)
    for _ in range(60):   # the view is replaced once the rerun has drawn it at normal size
        normal_px = heatmap_data(heatmap_frame(page))["font"]
        if normal_px != tick_px:
            break
        page.wait_for_timeout(500)
    assert frame_height > heatmap_frame(page).locator("#hm").bounding_box()["height"]   # room for larger labels
    assert tick_px >= 1.25 * normal_px and tick_px >= 14   # token labels on the axes grow too


def shot_path(name: str) -> str:
    folder = Path("/tmp/shots")
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder / f"{name}.png")


def open_link(page) -> str:
    """Open the footer's "Link to this view" popover and read the link in its copy box."""
    assert page.locator("[data-testid='stCode']").count() == 0  # folded away until asked for
    page.get_by_role("button", name="Link to this view").click()
    box = page.locator("[data-testid='stCode'] code")
    box.wait_for(state="visible", timeout=30_000)
    return box.inner_text().strip()


def test_copy_link_reproduces_the_view(settled, app_url):
    page = settled
    page.goto(f"{app_url}/heatmap?layer=4&head=7")
    wait_for_app(page, timeout=180_000)
    link = open_link(page)
    parts = urlsplit(link)
    params = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert parts.path.endswith("/heatmap") and params["layer"] == "4" and params["head"] == "7"
    assert params["text"] == TEXT
    assert link.startswith(app_url)
    # opening the link (a new session: a full page load) shows the same state
    page.goto("about:blank")
    page.goto(link)
    wait_for_app(page, timeout=180_000)
    assert open_link(page) == link


def test_downloads_produce_files(settled, app_url, tmp_path):
    page = settled
    page.goto(f"{app_url}/heatmap?layer=2&head=3")
    wait_for_app(page, timeout=180_000)
    with page.expect_download(timeout=60_000) as info:
        page.get_by_role("button", name="Download CSV").click()
    csv_path = tmp_path / "a.csv"
    info.value.save_as(csv_path)
    frame = pd.read_csv(csv_path, keep_default_na=False)
    assert list(frame.columns) == ["layer", "head", "query_pos", "key_pos", "query_token", "key_token", "weight"]
    assert len(frame) > 0 and frame["weight"].between(0, 1).all()
    with page.expect_download(timeout=60_000) as info:
        page.get_by_role("button", name="Download NPZ").click()
    npz_path = tmp_path / "a.npz"
    info.value.save_as(npz_path)
    data = np.load(npz_path)
    assert data["attentions"].shape[:2] == (6, 12) and len(data["tokens"]) == data["attentions"].shape[-1]
    with page.expect_download(timeout=120_000) as info:
        page.get_by_role("button", name="SVG").first.click()
    svg = Path(info.value.path()).read_bytes()
    assert svg.startswith(b"<svg") and len(svg) > 1000
    with page.expect_download(timeout=60_000) as info:
        heatmap_frame(page).locator("#hm-png").click()
    png = Path(info.value.path()).read_bytes()
    assert info.value.suggested_filename == "attention_encoder_L2_H3.png"
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000
    shot(page, "downloads_heatmap")


def test_gallery_button_opens_the_view(settled, app_url):
    page = settled
    page.goto(f"{app_url}/gallery")
    wait_for_app(page, timeout=180_000)
    page.get_by_role("button", name="Open in attention math").click()
    wait_for_app(page, timeout=180_000)
    assert "/attention_math" in page.url and "query=" in page.url
    assert page.get_by_text("max |softmax(ours) − model's weights|").is_visible()
    assert "cabinets" in page.locator("[data-testid='stSidebar'] textarea").input_value()
