"""Streamlit glue for the classroom: presentation mode, the copy-link control, data and SVG downloads.

app.py calls :func:`apply_presentation` before the page runs and :func:`footer`
after it, so every page gets the same link and downloads.  The pure helpers
(:func:`share_url`, :func:`attention_csv`, :func:`npz_bytes`, :func:`csv_scope`)
take plain values and are unit-tested without a running app.
"""
from __future__ import annotations

import functools
import io
import os
import shutil
import threading
import warnings
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit, urlunsplit

import numpy as np
import pandas as pd
import streamlit as st

from viz import explain, ui
from viz.result import AttentionResult, Block

MAX_CSV_ROWS = 300_000      # one 512-token head (262k cells) still fits; ~12 MB of CSV
PRESENT_FONT_PX = 21        # root font size in presentation mode (Streamlit sizes text in rem)
PRESENT_FIGURE_FONT = 17    # plotly text (token ticks, titles) in presentation mode

# Presentation mode: larger type everywhere (Streamlit uses rem units), wider
# content, no chrome.  Colours are left to the theme, so light and dark both work.
PRESENT_CSS = f"""
html {{ font-size: {PRESENT_FONT_PX}px !important; }}
[data-testid="stMainBlockContainer"] {{ max-width: 100% !important; padding: 3.6rem 2rem 2rem 2rem !important; }}
[data-testid="stMarkdownContainer"] p, [data-testid="stMarkdownContainer"] li {{ line-height: 1.45; }}
[data-testid="stHeader"] {{ background: transparent; }}
[data-testid="stToolbar"], [data-testid="stDecoration"] {{ display: none !important; }}
"""


# ---------------------------------------------------------------- pure helpers
def share_url(base: str | None, url_path: str, params) -> str:
    """The link that reproduces a view: app base URL + page path + every query parameter."""
    query = urlencode([(k, v) for k, v in dict(params).items() if v not in (None, "")])
    root = (base or "").rstrip("/")
    path = f"{root}/{url_path.strip('/')}" if url_path.strip("/") else f"{root}/"
    return f"{path}?{query}" if query else path


@dataclass(frozen=True)
class CsvScope:
    layers: tuple[int, ...]
    heads: tuple[int, ...]
    description: str

    def n_rows(self, block: Block) -> int:
        return len(self.layers) * len(self.heads) * block.pattern.shape[2] * block.pattern.shape[3]


def csv_scope(block: Block, *, layer: int | None = None, head: int | None = None,
              max_rows: int = MAX_CSV_ROWS) -> CsvScope:
    """The widest slice of the block that fits in ``max_rows``: all layers, one layer, or one head."""
    n_layers, n_heads, t_q, t_k = block.pattern.shape
    layer = 0 if layer is None or not 0 <= layer < n_layers else layer
    cells = t_q * t_k
    if n_layers * n_heads * cells <= max_rows:
        return CsvScope(tuple(range(n_layers)), tuple(range(n_heads)), "every layer and head")
    if n_heads * cells <= max_rows:
        return CsvScope((layer,), tuple(range(n_heads)), f"layer {layer}, every head (all layers would be too big)")
    head = 0 if head is None or not 0 <= head < n_heads else head
    return CsvScope((layer,), (head,), f"layer {layer}, head {head} (more would be too big)")


def attention_csv(block: Block, scope: CsvScope) -> bytes:
    """Long-form CSV: layer, head, query_pos, key_pos, query_token, key_token, weight."""
    t_q, t_k = block.pattern.shape[2:]
    sub = block.pattern[np.ix_(scope.layers, scope.heads)]              # (l, h, T_q, T_k)
    li, hi, qi, ki = (a.ravel() for a in np.indices(sub.shape))
    q_tokens = np.asarray(block.queries.tokens, dtype=object)
    k_tokens = np.asarray(block.keys.tokens, dtype=object)
    frame = pd.DataFrame({
        "layer": np.asarray(scope.layers)[li], "head": np.asarray(scope.heads)[hi], "query_pos": qi,
        "key_pos": ki, "query_token": q_tokens[qi], "key_token": k_tokens[ki], "weight": sub.ravel()})
    return frame.to_csv(index=False, float_format="%.6g").encode("utf-8")


def npz_bytes(result: AttentionResult) -> bytes:
    """The CLI's npz layout (viz.cli.result_arrays) as bytes."""
    from viz.cli import result_arrays
    buffer = io.BytesIO()
    np.savez(buffer, **result_arrays(result))
    return buffer.getvalue()


def safe_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text)[:80] or "attention"


# ---------------------------------------------------------------- presentation mode
def presenting() -> bool:
    return bool(st.session_state.get("viz_present"))


def _set_present(on: bool) -> None:
    st.session_state.viz_present = on
    st.session_state.w_present = on


def apply_presentation() -> bool:
    """Sidebar toggle + `present=1` URL state; in presentation mode, large type and a collapsed sidebar."""
    st.session_state["_viz_explained"] = False
    st.session_state["_viz_svg_keys"] = set()
    if "viz_present" not in st.session_state:
        st.session_state.viz_present = ui.query_param("present") == "1"
    if "w_present" not in st.session_state:
        st.session_state.w_present = st.session_state.viz_present
    with st.sidebar:
        st.toggle("Presentation mode", key="w_present",
                  on_change=lambda: _set_present(bool(st.session_state.w_present)),
                  help="Large type for a projector; the sidebar folds away (open it with the arrow at the top).")
    on = presenting()
    ui.set_query_param("present", "1" if on else None)
    if on:
        st.set_page_config(initial_sidebar_state="collapsed")
        st.html(f"<style>{PRESENT_CSS}</style>")
        st.button("Exit presentation mode", key="present_exit", type="tertiary", icon=":material/close:",
                  on_click=_set_present, args=(False,))
    return on


def style_figure(fig, present: bool | None = None):
    """Presentation mode: larger text in plotly figures (tokens on the axes, titles, hover). Returns ``fig``.

    ``present`` None reads the session; pass it when styling outside the script run (a download).
    """
    if presenting() if present is None else present:
        fig.update_layout(font=dict(size=PRESENT_FIGURE_FONT), hoverlabel=dict(font_size=PRESENT_FIGURE_FONT),
                          title_font_size=PRESENT_FIGURE_FONT + 4)
        # Streamlit's plotly theme sets the tick font itself: only axis-level sizes win over it.
        fig.update_xaxes(tickfont_size=PRESENT_FIGURE_FONT + 3, title_font_size=PRESENT_FIGURE_FONT + 3)
        fig.update_yaxes(tickfont_size=PRESENT_FIGURE_FONT + 3, title_font_size=PRESENT_FIGURE_FONT + 3)
        if fig.layout.height:  # rows sized for small labels: give the larger tokens room
            fig.update_layout(height=int(fig.layout.height * 1.5))
    return fig


# ---------------------------------------------------------------- made on click
# Streamlit keeps a session's download functions until the session is dropped. A function
# defined in a page script keeps that page's globals (the result among them) alive with
# it, so download data is built by these module functions from their arguments only.
def figure_later(build, *args, **kwargs):
    """A plotly figure built (and styled for the current mode) only when called: for svg_button."""
    return functools.partial(_styled_figure, build, args, kwargs, presenting())


def _styled_figure(build, args, kwargs, present):
    return style_figure(build(*args, **kwargs), present)


def head_view_all_layers_later(kind: str, *, pair: str, top_mass, title: str):
    """The head view of every layer of the current input, as offline HTML, built when called."""
    return functools.partial(_head_view_all_layers, ui.result_later(), kind, ui.view_flags(), pair, top_mass, title)


def _head_view_all_layers(later, kind, flags, pair, top_mass, title) -> str:
    from viz import headview
    block = ui.transform(later().block(kind), flags)
    return headview.build_head_view(block, layers=list(range(block.n_layers)), pair=pair, top_mass=top_mass,
                                    title=title).html


# ---------------------------------------------------------------- SVG export
_KALEIDO_LOCK = threading.Lock()
_kaleido_started = False


def svg_available() -> bool:
    """Static export needs kaleido and a Chrome/Chromium on the server."""
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return False
    return bool(os.environ.get("BROWSER_PATH") or any(
        shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome", "chrome")))


def figure_svg(fig) -> bytes:
    """The figure as SVG via kaleido (one long-lived headless browser, started on first use)."""
    global _kaleido_started
    import kaleido
    with _KALEIDO_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not _kaleido_started:
            kaleido.start_sync_server(silence_warnings=True)
            _kaleido_started = True
        width = None if fig.layout.width else 1000
        return fig.to_image(format="svg", width=width)


def svg_button(fig, *, name: str, key: str | None = None) -> None:
    """A small "SVG" download under a figure; the SVG is drawn only when clicked.

    ``fig`` may be a function returning the figure: then even the figure is built only on click.
    """
    if not svg_available():
        return
    used = st.session_state.setdefault("_viz_svg_keys", set())
    base = f"svg_{key or name}"
    widget_key, n = base, 1
    while widget_key in used:  # the same figure name twice on one page
        n += 1
        widget_key = f"{base}_{n}"
    used.add(widget_key)
    st.download_button("SVG", data=lambda: figure_svg(fig() if callable(fig) else fig),
                       file_name=f"{safe_name(name)}.svg",
                       mime="image/svg+xml", key=widget_key, type="tertiary", icon=":material/download:",
                       on_click="ignore", help="Download this figure as SVG (the figure itself offers PNG)")


# ---------------------------------------------------------------- footer: link and downloads
def app_base(url: str | None, page_paths) -> str:
    """The app's root URL: st.context.url can still end in a page path (seen: /heatmap/heatmap links)."""
    if not url:
        return ""
    parts = urlsplit(url)
    segments = [p for p in parts.path.split("/") if p]
    known = {p.strip("/") for p in page_paths if p and p.strip("/")}
    while segments and segments[-1] in known:
        segments.pop()
    path = "/" + "/".join(segments) if segments else ""
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def _page_paths() -> set[str]:
    try:
        from streamlit.runtime.scriptrunner import get_script_run_ctx
        ctx = get_script_run_ctx()
        return {info.get("url_pathname", "") for info in ctx.pages_manager.get_pages().values()} if ctx else set()
    except Exception:  # noqa: BLE001 - private API: without it only the current page's path is trimmed
        return set()


def current_url(url_path: str) -> str:
    base = app_base(st.context.url, _page_paths() | {url_path})
    return share_url(base, url_path, st.query_params.to_dict())


def _current_result() -> AttentionResult | None:
    s = st.session_state
    return ui.compute(s.get("viz_text", ui.DEFAULT_TEXT), pair=s.get("viz_pair", ""),
                      target=s.get("viz_target", ""), model=s.get("viz_model"))


def _int_or_none(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def footer(page) -> None:
    """After every page: its explanation (if it has none), the link to this view, CSV and NPZ downloads."""
    url_path = getattr(page, "url_path", "") or ""
    if not st.session_state.get("_viz_explained"):
        ui.explain(explain.for_page(url_path))
    st.divider()
    # In a popover: st.code pulls in a 1.5 MB syntax highlighter that every student's
    # browser would otherwise load on first visit; a popover loads it only when opened.
    with st.popover("Link to this view", icon=":material/link:"):
        st.markdown("Copy it with the button at the right of the box: it reopens this page with the same "
                    "model, text, layer, head and options.")
        st.code(current_url(url_path), language=None, wrap_lines=False)
    result = _current_result()
    if result is None:
        return
    kind = st.session_state.get("viz_kind")
    kind = kind if kind in result.kinds else None
    block = result.block(kind)
    layer, head = _int_or_none(st.session_state.get("viz_layer")), _int_or_none(st.session_state.get("viz_head"))
    scope = csv_scope(block, layer=layer, head=head)
    stem = safe_name(f"attention_{block.kind}")
    later = ui.result_later()   # the buttons keep the input, not this result (see result_later)
    with ui.row():
        st.download_button("Download CSV", data=lambda: attention_csv(later().block(kind), scope),
                           file_name=f"{stem}.csv",
                           mime="text/csv", key="dl_csv", icon=":material/table:", on_click="ignore",
                           help="Long form: layer, head, query_pos, key_pos, query_token, key_token, weight")
        st.download_button("Download NPZ", data=lambda: npz_bytes(later()), file_name="attention.npz",
                           mime="application/octet-stream", key="dl_npz", icon=":material/download:",
                           on_click="ignore", help="numpy arrays in the CLI's layout (np.load)")
    st.caption(f"CSV: {ui.KIND_LABELS.get(block.kind, block.kind)}, {scope.description}, "
               f"{scope.n_rows(block):,} rows. NPZ: every block, layer and head, with the tokens "
               f"(the CLI's capture layout).")
