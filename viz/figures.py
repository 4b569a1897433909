"""Plotly figure builders shared by pages: numpy in, go.Figure out (no streamlit).

Heatmap axes are categories "position token" (unique) with the bare token as
tick text, because plotly merges rows whose category labels repeat ("the ... the").
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

ATTENTION_SCALE = "Blues"
MAX_TICKS = 80  # beyond this, label every k-th token so the axis stays readable


def _ticks(categories: list[str], labels, n_max: int = MAX_TICKS) -> tuple[list[str], list[str]]:
    """Every k-th category as a tick value, with the bare token label as its text."""
    step = max(1, int(np.ceil(len(categories) / n_max)))
    picked = range(0, len(categories), step)
    return [categories[i] for i in picked], [str(labels[i]) for i in picked]


def attention_heatmap(pattern: np.ndarray, query_labels, key_labels, *, causal: bool = False,
                      title: str = "", zmax: float | None = None, colorscale: str = ATTENTION_SCALE,
                      query_axis: str = "query (attends from)", key_axis: str = "key (attends to)") -> go.Figure:
    """One head's (query_pos, key_pos) matrix with tokens on both axes and hover of query, key, weight.

    With ``causal`` the masked future (key_pos > query_pos) is drawn as a gap
    (NaN, hatched grey background), not as zeros.
    """
    pattern = np.asarray(pattern, dtype=np.float32)
    n_q, n_k = pattern.shape
    z = pattern.copy()
    if causal:
        z[np.triu_indices(n_q, k=1, m=n_k)] = np.nan
    # Axis categories "position token" are unique even when tokens repeat, and let the
    # hover name both tokens without a per-cell customdata array (5 MB at 512 tokens).
    q_cat = [f"{i} {lab}" for i, lab in enumerate(query_labels)]
    k_cat = [f"{j} {lab}" for j, lab in enumerate(key_labels)]
    finite = np.isfinite(z)
    fig = go.Figure(go.Heatmap(
        z=z, x=k_cat, y=q_cat, colorscale=colorscale,
        zmin=0, zmax=zmax if zmax is not None else float(np.nanmax(z)) if finite.any() else 1,
        hoverongaps=False, colorbar=dict(title="weight"),
        hovertemplate="query %{y}<br>key %{x}<br>weight %{z:.4f}<extra></extra>"))
    xv, xt = _ticks(k_cat, key_labels)
    yv, yt = _ticks(q_cat, query_labels)
    side = max(360, min(900, 60 + 16 * max(n_q, n_k)))
    fig.update_layout(
        title=title, height=side, margin=dict(l=10, r=10, t=40 if title else 10, b=10),
        xaxis=dict(title=key_axis, tickmode="array", tickvals=xv, ticktext=xt, tickangle=-60, side="bottom"),
        yaxis=dict(title=query_axis, tickmode="array", tickvals=yv, ticktext=yt, autorange="reversed"),
        plot_bgcolor="rgba(128,128,128,0.25)" if causal else None)
    return fig


def export_config(name: str, *, scale: int = 3) -> dict:
    """plotly toolbar config: PNG export with a sensible file name and print resolution."""
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)[:80] or "figure"
    return {"displaylogo": False, "toImageButtonOptions": {"format": "png", "filename": safe, "scale": scale},
            "modeBarButtonsToAdd": ["toImage"]}
