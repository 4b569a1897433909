"""What pages put on screen: figures, explanations, presentation mode, downloads and the footer.

app.py calls :func:`apply_presentation` before the page runs and :func:`footer` after it,
so every page gets the same explanation, link and downloads. Download data is built on
click by module functions from their arguments only: Streamlit keeps a session's download
functions until the session is dropped, and a function defined in a page script would
keep that page's globals (the result among them) alive with it.
"""
from __future__ import annotations

import functools
import shutil
import threading
import warnings

import streamlit as st

from viz import explain, export
from viz.settings import browser_path
from viz.figures.common import export_config
from viz.ui import compute, state
from viz.ui.widgets import KIND_LABELS, row, transform

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


# ---------------------------------------------------------------- presentation mode
def presenting() -> bool:
    return bool(st.session_state.get("viz_present"))


def theme() -> str:
    """"dark" or "light": the theme the app is shown in, the best guess a server has.

    The canvas heatmap and the head view follow the real theme in the browser by themselves; this
    is their first guess and the only one for pictures drawn on the server (the model view's PNG).
    On a session's first run st.context.theme is not known yet (Streamlit 1.67 reports "light"
    even under theme.base=dark), so the configured base wins there.
    """
    base = st.get_option("theme.base")
    seen = getattr(getattr(st.context, "theme", None), "type", None)
    if base and not st.session_state.get("_theme_seen"):
        st.session_state["_theme_seen"] = True
        return "dark" if base == "dark" else "light"
    return "dark" if (seen or base) == "dark" else "light"


def figure_font_px() -> int:
    """Font size for views drawn outside plotly (canvas heatmap, head view)."""
    return PRESENT_FIGURE_FONT + 3 if presenting() else 12


def _set_present(on: bool) -> None:
    st.session_state.viz_present = on
    st.session_state.w_present = on


def apply_presentation() -> bool:
    """Sidebar toggle + `present=1` URL state; in presentation mode, large type and a collapsed sidebar."""
    st.session_state["_viz_svg_keys"] = set()
    if "viz_present" not in st.session_state:
        st.session_state.viz_present = state.url_value("present") == "1"
    if "w_present" not in st.session_state:
        st.session_state.w_present = st.session_state.viz_present
    with st.sidebar:
        st.toggle("Presentation mode", key="w_present",
                  on_change=lambda: _set_present(bool(st.session_state.w_present)),
                  help="Large type for a projector; the sidebar folds away (open it with the arrow at the top).")
    on = presenting()
    state.set_url("present", "1" if on else None)
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


# ---------------------------------------------------------------- figures and views
def show_figure(fig, *, name: str, key: str | None = None, **kwargs):
    """st.plotly_chart with the PNG export button named after the view, and an SVG download."""
    style_figure(fig)
    shown = st.plotly_chart(fig, config=export_config(name), key=key, **kwargs)
    svg_button(fig, name=name, key=key)
    return shown


def show_view(fragment: str) -> None:
    """An HTML/JS view (viz/views) put into the page: trusted code, tokens only as escaped JSON."""
    st.html(fragment, unsafe_allow_javascript=True)


def figure_later(build, *args, **kwargs):
    """A plotly figure built (and styled for the current mode) only when called: for svg_button."""
    return functools.partial(_styled_figure, build, args, kwargs, presenting())


def _styled_figure(build, args, kwargs, present):
    return style_figure(build(*args, **kwargs), present)


def head_view_all_layers_later(kind: str, *, pair: str, top_mass, title: str):
    """The head view of every layer of the current input, as offline HTML, built when called."""
    return functools.partial(_head_view_all_layers, compute.result_later(), kind, state.view_key(), pair,
                             top_mass, title)


def _head_view_all_layers(later, kind, flags, pair, top_mass, title) -> str:
    from viz.views import head_view
    block = transform(later().block(kind), flags)
    return head_view.build_head_view(block, layers=list(range(block.n_layers)), pair=pair, top_mass=top_mass,
                                     title=title).html


def _csv(build, value) -> bytes:
    return build(value).to_csv(index=False).encode("utf-8")


def table_download(label: str, build, value, *, file_name: str) -> None:
    """A CSV download of ``build(value)`` (a DataFrame), built on click. Keep ``value`` small (no full
    attention result): Streamlit holds the session's download data until the session ends."""
    st.download_button(label, data=functools.partial(_csv, build, value), file_name=file_name, mime="text/csv",
                       on_click="ignore", icon=":material/table:", key=f"dl_{export.safe_name(file_name)}")


# ---------------------------------------------------------------- SVG export
_KALEIDO_LOCK = threading.Lock()
_kaleido_started = False


def svg_available() -> bool:
    """Static export needs kaleido and a Chrome/Chromium on the server."""
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return False
    return bool(browser_path() or any(
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
                       file_name=f"{export.safe_name(name)}.svg",
                       mime="image/svg+xml", key=widget_key, type="tertiary", icon=":material/download:",
                       on_click="ignore", help="Download this figure as SVG (the figure itself offers PNG)")


# ---------------------------------------------------------------- explanations and the footer
def explain_box(markdown: str, *, title: str = "What am I looking at?") -> None:
    with st.expander(title):
        st.markdown(markdown)


def _int_or_none(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def footer(page) -> None:
    """After every page: its explanation, the link to this view, CSV and NPZ downloads."""
    url_path = getattr(page, "url_path", "") or ""
    result = None
    if url_path == "generate":     # the generated sequence, already computed by the page
        generated = compute.generation(state.generation_settings(), show_progress=False)
        result = generated.attention if generated is not None else None
    elif url_path not in state.LLM_PAGES and st.session_state.get("viz_initialised"):
        result = compute.current_result(warn=False)
    kind = state.get("kind")
    block = None
    if result is not None:
        block = result.block(kind if kind in result.kinds else None)
    explain_box(explain.for_page(url_path, kind=block.kind if block else None,
                                 causal=bool(block and block.causal)))
    st.divider()
    # In a popover: st.code pulls in a 1.5 MB syntax highlighter that every student's
    # browser would otherwise load on first visit; a popover loads it only when opened.
    with st.popover("Link to this view", icon=":material/link:"):
        st.markdown("Copy it with the button at the right of the box: it reopens this page with the same "
                    "model, text, layer, head and options.")
        st.code(state.current_url(url_path), language=None, wrap_lines=False)
    if block is None:
        return
    layer, head = _int_or_none(state.get("layer")), _int_or_none(state.get("head"))
    rows, keys = _heatmap_region(url_path, block)
    scope = export.csv_scope(block, layer=layer, head=head, rows=rows, keys=keys)
    npz = export.npz_scope(result, layer=layer)       # a long result: the shown layer only (it says so)
    stem = export.safe_name(f"attention_{block.kind}")
    later = compute.result_later()   # the buttons keep the input, not this result (see result_later)
    block_kind = block.kind
    with row():
        st.download_button("Download CSV", data=lambda: export.attention_csv(later().block(block_kind), scope),
                           file_name=f"{stem}.csv",
                           mime="text/csv", key="dl_csv", icon=":material/table:", on_click="ignore",
                           help="Long form: layer, head, query_pos, key_pos, query_token, key_token, weight")
        st.download_button("Download NPZ", data=lambda: export.npz_bytes(later(), npz),
                           file_name="attention.npz" if npz.layer is None else f"attention_L{npz.layer}.npz",
                           mime="application/octet-stream", key="dl_npz", icon=":material/download:",
                           on_click="ignore", help="numpy arrays in the CLI's layout (np.load)")
    npz_text = ("every block, layer and head, with the tokens (the CLI's capture layout)" if npz.layer is None
                else f"{npz.description}; `layers` in the file names it")
    st.caption(f"CSV: {KIND_LABELS.get(block.kind, block.kind)}, {scope.description}, "
               f"{scope.n_rows(block):,} rows (about {_megabytes(scope.nbytes(block))}). NPZ: {npz_text}.")


def _megabytes(nbytes: int) -> str:
    return f"{nbytes / 1e6:,.1f} MB" if nbytes < 10e6 else f"{nbytes / 1e6:,.0f} MB"


def _heatmap_region(url_path: str, block) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    """The heatmap's zoomed region as [start, stop) rows and keys of ``block``, for the CSV; (None, None)
    elsewhere, and under word-level or hidden tokens (the region's positions are those of the
    transformed matrix, the CSV's those of the tokens)."""
    if url_path != "heatmap" or any(state.view_key()) or state.get("queries") is None:
        return None, None
    from viz.views.heatmap import window_of
    n_q, n_k = block.pattern.shape[2:]
    window = window_of(state.get("queries"), state.get("keys"), n_q, n_k)
    if window.is_whole(n_q, n_k):
        return None, None
    return (window.q0, window.q1), (window.k0, window.k1)
