"""Figures for the attention-flow page: how much each input token reaches one output position.

The measures (raw attention, rollout, flow, norm-based) come from :mod:`viz.flow`; this module
only draws them.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from viz.figures.common import thin_ticks


def relevance_figure(relevance: dict[str, np.ndarray], labels, *, title: str = "") -> go.Figure:
    """Grouped bars: for one output position, each method's share per input token.

    ``relevance`` maps a method name to a ``(T,)`` row (NaN rows are skipped).
    Bars sit at integer positions with the tokens as tick text, so repeated
    tokens do not merge.
    """
    labels = [str(label) for label in labels]
    positions = np.arange(len(labels))
    fig = go.Figure()
    for name, row in relevance.items():
        row = np.asarray(row, dtype=np.float32)
        if row.shape != positions.shape:
            raise ValueError(f"{name}: {row.shape[0]} values for {len(labels)} tokens")
        if np.isnan(row).all():
            continue
        fig.add_trace(go.Bar(x=positions, y=row, name=name, customdata=labels,
                             hovertemplate=f"{name}<br>token %{{x}}: %{{customdata}}"
                                           "<br>share %{y:.4f}<extra></extra>"))
    tickvals, ticktext = thin_ticks(labels)
    fig.update_layout(
        title=dict(text=title, x=0, xanchor="left"), barmode="group", height=420,
        margin=dict(l=10, r=10, t=90 if title else 40, b=10),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0),
        xaxis=dict(title="input token", tickmode="array", tickvals=tickvals, ticktext=ticktext, tickangle=-60),
        yaxis=dict(title="share of the row", rangemode="tozero"))
    return fig
