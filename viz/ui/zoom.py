"""The heatmap's window: which query rows x key columns it draws, picked two ways and kept in the URL.

A person drags a box on the canvas heatmap (its script sends the box through a components-v2 bridge
whose JavaScript is ``viz/views/assets/heatmap_zoom.js``), or types "query rows from..to / keys
from..to" in the form under it; either way the window is the session's ``queries`` / ``keys`` value
and the URL's ``queries=100-163&keys=0-63``, so a link reopens the same region. What the browser sends
is parsed and bounded here again (:func:`viz.views.heatmap.window_of`): it is never trusted.
"""
from __future__ import annotations

import streamlit as st

from viz.views.heatmap import Window, window_of
from viz.views.template import asset

_FIELDS = ("q_from", "q_to", "k_from", "k_to")
_bridge = None


def _zoom_bridge():
    """The components-v2 element that hands the canvas's dragged box to the script (registered once)."""
    global _bridge
    if _bridge is None:
        _bridge = st.components.v2.component("attention_explorer.heatmap_zoom", js=asset("heatmap_zoom.js"))
    return _bridge


def _ignore() -> None:
    """The bridge's change callback: the value is read where the bridge is mounted (it has to exist for
    Streamlit to report the trigger)."""


def _apply(queries: str | None, keys: str | None) -> None:
    from viz.ui import state
    state.put("queries", queries or None)
    state.put("keys", keys or None)
    for field in _FIELDS:                      # the form re-reads the applied window when drawn next
        st.session_state.pop(f"w_hm_{field}", None)


def _typed() -> None:
    """The form's "Zoom in" button: the typed numbers become the window."""
    q0, q1, k0, k1 = (st.session_state.get(f"w_hm_{f}") for f in _FIELDS)
    if None in (q0, q1, k0, k1):
        return
    _apply(f"{int(q0)}-{int(q1)}", f"{int(k0)}-{int(k1)}")


def pick_window(n_queries: int, n_keys: int) -> Window:
    """The window the heatmap draws (the whole matrix unless a region was picked); draws the zoom form."""
    from viz.ui import state
    url = (state.url_value("queries"), state.url_value("keys"))
    if url != st.session_state.get("_url_window") and (state.get("queries") is None or any(url)):
        _apply(*url)                           # a link or the first run: the URL's region
    dragged = _zoom_bridge()(key="hm_zoom_bridge", on_zoom_change=_ignore).zoom
    if isinstance(dragged, dict):
        _apply(str(dragged.get("queries", ""))[:40], str(dragged.get("keys", ""))[:40])
    window = window_of(state.get("queries"), state.get("keys"), n_queries, n_keys)
    is_whole = window.is_whole(n_queries, n_keys)
    values = (window.q0, window.q1 - 1, window.k0, window.k1 - 1)
    if st.session_state.get("_hm_seeded") != (values, n_queries, n_keys):   # a new window, or another input
        st.session_state["_hm_seeded"] = (values, n_queries, n_keys)
        for field, value in zip(_FIELDS, values):
            st.session_state[f"w_hm_{field}"] = value
    with st.expander("Zoom into a region" if is_whole else f"Region: {window.describe()}", expanded=not is_whole):
        st.caption("Drag a box on the heatmap, or type the positions (0-based, both ends included). "
                   "The region is drawn cell by cell with its tokens, and hover reads its exact weights.")
        with st.form("hm_region", border=False):
            with st.container(horizontal=True, gap="small", vertical_alignment="bottom"):
                limits = ((n_queries, "Query rows from", "to"), (n_keys, "Keys from", "to"))
                for (n, first, second), (lo, hi) in zip(limits, (("q_from", "q_to"), ("k_from", "k_to"))):
                    st.number_input(first, min_value=0, max_value=n - 1, step=1, key=f"w_hm_{lo}")
                    st.number_input(second, min_value=0, max_value=n - 1, step=1, key=f"w_hm_{hi}")
                st.form_submit_button("Zoom in", on_click=_typed, icon=":material/zoom_in:")
        if not is_whole:
            st.button("Whole matrix", key="hm_whole", on_click=_apply, args=(None, None),
                      icon=":material/zoom_out_map:")
    queries, keys = (None, None) if is_whole else (window.queries, window.keys)
    state.set_url("queries", queries)
    state.set_url("keys", keys)
    st.session_state["_url_window"] = (queries, keys)
    return window
