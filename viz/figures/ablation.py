"""Figures for knocking heads out: what changes at every position, the top-k before and after."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from viz.figures.common import margin, thin_ticks

BEFORE, AFTER = "#4c78a8", "#d62728"


def _positions(labels) -> tuple[list, list]:
    cats = [f"{i} {lab}" for i, lab in enumerate(labels)]
    return cats, thin_ticks(labels, values=cats)


def decoder_effect_figure(labels, p_before: np.ndarray, p_after: np.ndarray, kl: np.ndarray, *,
                          title: str = "") -> go.Figure:
    """Per position: p(actual next token) before and after (top), KL(before || after) (bottom)."""
    cats, (tv, tt) = _positions(labels)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.6, 0.4], vertical_spacing=0.06)
    for y, name, colour in ((p_before, "before", BEFORE), (p_after, "after (heads knocked out)", AFTER)):
        fig.add_trace(go.Scatter(x=cats, y=y, name=name, mode="lines+markers", line=dict(color=colour),
                                 hovertemplate="%{x}<br>p(next) = %{y:.4f}<extra>" + name + "</extra>"), 1, 1)
    fig.add_trace(go.Bar(x=cats, y=kl, name="KL(before ‖ after)", marker_color="#7f7f7f",
                         hovertemplate="%{x}<br>KL = %{y:.4f} nats<extra></extra>"), 2, 1)
    fig.update_layout(title=title, height=440, margin=margin(title, top=80),
                      legend=dict(orientation="h", y=1.02, yanchor="bottom"))
    fig.update_yaxes(title_text="p(actual next token)", range=[0, 1.02], row=1, col=1)
    fig.update_yaxes(title_text="KL (nats)", row=2, col=1)
    fig.update_xaxes(tickmode="array", tickvals=tv, ticktext=tt, tickangle=-60, row=2, col=1)
    return fig


def encoder_effect_figure(labels, cosine: np.ndarray, *, title: str = "") -> go.Figure:
    """Per token: cosine between its last hidden state before and after (1 = unchanged)."""
    cats, (tv, tt) = _positions(labels)
    fig = go.Figure(go.Bar(x=cats, y=cosine, marker_color=AFTER,
                           hovertemplate="%{x}<br>cosine = %{y:.4f}<extra></extra>"))
    low = float(np.nanmin(cosine)) if np.isfinite(cosine).any() else 0.0
    fig.update_layout(title=title, height=320, margin=margin(title),
                      xaxis=dict(tickmode="array", tickvals=tv, ticktext=tt, tickangle=-60),
                      yaxis=dict(title="cosine before/after", range=[min(0.0, low) if low < 0.9 else 0.9 * low, 1.0]))
    return fig


def topk_compare_figure(labels, before: np.ndarray, after: np.ndarray, *, title: str = "") -> go.Figure:
    """The same tokens' probability before and after, side by side (most likely before first)."""
    names = [f"{i + 1}. {lab}" for i, lab in enumerate(labels)]
    fig = go.Figure([go.Bar(y=names, x=before, name="before", orientation="h", marker_color=BEFORE),
                     go.Bar(y=names, x=after, name="after", orientation="h", marker_color=AFTER)])
    fig.update_layout(title=title, barmode="group", height=110 + 34 * len(names), margin=margin(title),
                      xaxis=dict(title="probability"), yaxis=dict(autorange="reversed", type="category"),
                      legend=dict(orientation="h", y=1.08))
    return fig
