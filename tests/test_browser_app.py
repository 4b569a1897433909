"""What a person sees in Chromium: type, Run, heatmap; a shared URL; hostile text stays text."""
from __future__ import annotations

from urllib.parse import parse_qs, quote, urlparse

from browser import shot, wait_for_app

XSS = '<img src=x onerror=alert(1)>'


def test_type_run_and_see_heatmap(page, app_url):
    page.goto(f"{app_url}/heatmap")
    wait_for_app(page)
    box = page.get_by_role("textbox", name="Text")
    box.fill("Colorless green ideas sleep furiously.")
    page.get_by_role("button", name="Run").click()
    wait_for_app(page)
    plot = page.locator(".js-plotly-plot").first
    plot.wait_for(timeout=30_000)
    ticks = page.locator(".js-plotly-plot .xtick text").evaluate_all("els => els.map(e => e.textContent)")
    assert "ideas" in ticks and "sleep" in ticks
    assert parse_qs(urlparse(page.url).query)["text"] == ["Colorless green ideas sleep furiously."]
    # hover a cell: plotly shows query, key and weight
    box = plot.locator(".nsewdrag").first.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3)
    page.wait_for_selector(".hoverlayer .hovertext", timeout=10_000)
    hover = page.locator(".hoverlayer .hovertext").first.text_content()
    assert "query" in hover and "key" in hover and "weight" in hover
    shot(page, "heatmap_typed")


def test_shared_url_reproduces_view(page, app_url):
    page.goto(f"{app_url}/heatmap?text={quote('The keys to the cabinet are here.')}&layer=3&head=5")
    wait_for_app(page)
    page.locator(".js-plotly-plot").first.wait_for(timeout=30_000)
    title = page.locator(".js-plotly-plot .gtitle").first.text_content()
    assert "layer 3" in title and "head 5" in title
    assert page.get_by_role("textbox", name="Text").input_value() == "The keys to the cabinet are here."


def test_hostile_text_shows_literally_and_fires_nothing(page, app_url):
    page.goto(f"{app_url}/?text={quote(XSS + ' </script><b>bold</b>')}")
    wait_for_app(page)
    page.locator("[data-testid='stDataFrame']").first.wait_for(timeout=30_000)
    assert page.get_by_role("textbox", name="Text").input_value().startswith(XSS)
    assert page.locator("img[src='x']").count() == 0 and page.locator("b:text('bold')").count() == 0
    page.goto(f"{app_url}/heatmap?text={quote(XSS)}")
    wait_for_app(page)
    page.locator(".js-plotly-plot").first.wait_for(timeout=30_000)
    assert page.locator("img[src='x']").count() == 0
    assert page.dialogs == []
    shot(page, "hostile_heatmap")


def test_fresh_server_first_request_to_a_sub_page(page, tmp_path):
    """A shared link is often the first request a classroom server gets: it must show the full app."""
    from conftest import streamlit_server
    with streamlit_server(tmp_path / "fresh.log") as url:
        page.goto(f"{url}/glossary")
        wait_for_app(page)
        page.get_by_role("textbox", name="Text").wait_for(timeout=30_000)  # the shared sidebar is there
        nav = page.locator("[data-testid='stSidebarNav']").inner_text()
        assert "Glossary" in nav and "app" not in nav.split()
