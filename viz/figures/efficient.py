"""Plotly builders and tables for the efficient-attention lab (numpy/pandas in, figures out).

The patterns and their metrics come from :mod:`viz.efficient`; this module draws and tabulates them.

Long texts are pooled before drawing a grid of small heatmaps: a 512-token
head drawn for ten patterns would send megabytes per figure, and a 140-pixel
panel cannot show 512 rows anyway.  Pooling averages the mask (share of
allowed cells) and, for attention, averages over query rows and *sums* over
key columns, so every pooled row still sums to what the original row did.
"""
from __future__ import annotations

import html

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from viz.efficient import METHOD_INFO, CostRow, HeadSummary, LayerMetrics
from viz.figures.common import attention_scale, thin_ticks

GRID_COLS = 5
POOL_CELLS = 64          # grid panels are pooled to at most this many cells per axis
PATTERN_COLORS = {
    "full": "#222222", "window": "#1f77b4", "dilated": "#17becf", "longformer": "#2ca02c",
    "bigbird": "#98df8a", "block": "#9467bd", "lsh": "#ff7f0e", "linformer": "#d62728",
    "lowrank": "#e377c2", "synthesizer": "#7f7f7f",
}


def title_of(name: str) -> str:
    info = METHOD_INFO.get(name)
    return info.title if info else name


def short_title_of(name: str) -> str:
    info = METHOD_INFO.get(name)
    return info.short if info and info.short else name


def _label(s) -> str:
    return html.escape(str(s), quote=False)


def pool_edges(n: int, max_cells: int) -> np.ndarray:
    """Edges of at most ``max_cells`` contiguous groups covering 0..n."""
    cells = min(n, max(1, max_cells))
    return np.unique(np.linspace(0, n, cells + 1).round().astype(np.int64))


def pool_matrix(matrix: np.ndarray, *, max_cells: int = POOL_CELLS, sum_keys: bool = False
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pool (T_q, T_k) to at most max_cells per axis -> (pooled, query_edges, key_edges).

    Rows are averaged within a group; columns are averaged, or summed with
    ``sum_keys`` (attention: a pooled row then keeps its row sum).
    """
    m = np.asarray(matrix, dtype=np.float64)
    qe, ke = pool_edges(m.shape[0], max_cells), pool_edges(m.shape[1], max_cells)
    rows = np.add.reduceat(m, qe[:-1], axis=0) / np.diff(qe)[:, None]
    cols = np.add.reduceat(rows, ke[:-1], axis=1)
    if not sum_keys:
        cols = cols / np.diff(ke)[None, :]
    return cols, qe, ke


def _axis_ticks(edges: np.ndarray, labels) -> tuple[list[int], list[str]]:
    """Tick values/text for a (possibly pooled) axis: token labels when not pooled, else position ranges."""
    if len(edges) - 1 == len(labels):
        return thin_ticks([_label(s) for s in labels], 20)
    groups = [f"{a}–{b - 1}" if b - 1 > a else f"{a}" for a, b in zip(edges[:-1], edges[1:])]
    return thin_ticks(groups, 8)


def pattern_grid_figure(approximations, query_labels, key_labels, *, show: str = "pattern",
                        max_cells: int = POOL_CELLS, cols: int = GRID_COLS, gamma: float = 1.0) -> go.Figure:
    """Small multiples: one heatmap per pattern of its mask (``show="mask"``) or of the attention it produces.

    All panels share one colour axis so they compare: white to blue for
    attention, red below zero (only the low-rank bound can go negative).
    """
    approximations = tuple(approximations)
    n = len(approximations)
    n_rows = int(np.ceil(n / cols))
    fig = make_subplots(rows=n_rows, cols=cols, subplot_titles=[short_title_of(a.name) for a in approximations],
                        horizontal_spacing=0.03, vertical_spacing=0.12 / max(1, n_rows - 1) + 0.06)
    zmin, zmax = 0.0, 1.0
    pooled_all = []
    for a in approximations:
        if show == "mask":
            z, qe, ke = pool_matrix(a.mask.astype(np.float64), max_cells=max_cells)
        else:
            z, qe, ke = pool_matrix(a.pattern, max_cells=max_cells, sum_keys=True)
        pooled_all.append((z, qe, ke))
    if show != "mask":
        zmax = max(1e-9, max(float(np.nanmax(z)) for z, _, _ in pooled_all))
        zmin = min(0.0, min(float(np.nanmin(z)) for z, _, _ in pooled_all))
    for i, (a, (z, qe, ke)) in enumerate(zip(approximations, pooled_all)):
        r, c = divmod(i, cols)
        # x/y are each group's first position, so hover tells where a (pooled) cell starts
        # without sending a label per cell (10 panels x 64 x 64 strings would be megabytes).
        pooled_axis = len(qe) - 1 < len(query_labels) or len(ke) - 1 < len(key_labels)
        where = "queries from %{y}<br>keys from %{x}" if pooled_axis else "query %{y}<br>key %{x}"
        hover = (where + "<br>" + ("allowed %{z:.0%}" if show == "mask" else "weight %{z:.4f}")
                 + "<extra>" + _label(short_title_of(a.name)) + "</extra>")
        fig.add_trace(go.Heatmap(z=z.astype(np.float32), x=ke[:-1], y=qe[:-1], hovertemplate=hover,
                                 coloraxis="coloraxis", name=a.name), row=r + 1, col=c + 1)
        fig.update_yaxes(autorange="reversed", showticklabels=False, row=r + 1, col=c + 1)
        fig.update_xaxes(showticklabels=False, row=r + 1, col=c + 1)
    if show == "mask":
        coloraxis = dict(colorscale="Greys", cmin=0, cmax=1, colorbar=dict(title="allowed"))
    else:
        # one scale for all panels so they compare; negatives (low-rank bound only) in red
        coloraxis = dict(colorscale=attention_scale(zmin, zmax, gamma=gamma), cmin=zmin, cmax=zmax,
                         colorbar=dict(title="weight"))
    pooled = len(pooled_all[0][1]) - 1 < len(query_labels) if pooled_all else False
    note = " (pooled: each cell is a group of positions)" if pooled else ""
    fig.update_layout(coloraxis=coloraxis, height=230 * n_rows + 60, margin=dict(l=10, r=10, t=50, b=10),
                      title=("Masks: which keys each query may use" if show == "mask"
                             else "Attention each pattern produces") + note)
    return fig


def detail_figure(original: np.ndarray, approximation, query_labels, key_labels, *, max_cells: int = 512,
                  gamma: float = 1.0) -> go.Figure:
    """Original attention, the pattern's mask and the attention it produces, side by side (one head)."""
    orig, qe, ke = pool_matrix(original, max_cells=max_cells, sum_keys=True)
    mask, _, _ = pool_matrix(approximation.mask.astype(np.float64), max_cells=max_cells)
    approx, _, _ = pool_matrix(approximation.pattern, max_cells=max_cells, sum_keys=True)
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.06,
                        subplot_titles=("Original attention", f"Mask: {title_of(approximation.name)}",
                                        "Attention it produces"))
    zmax = max(float(orig.max()), float(approx.max()), 1e-9)
    zmin = min(0.0, float(approx.min()))
    xv, xt = _axis_ticks(ke, key_labels)
    yv, yt = _axis_ticks(qe, query_labels)
    for c, (z, axis, label) in enumerate(((orig, "coloraxis", "weight"), (mask, "coloraxis2", "allowed"),
                                          (approx, "coloraxis", "weight")), start=1):
        fig.add_trace(go.Heatmap(z=z.astype(np.float32), x=np.arange(z.shape[1]), y=np.arange(z.shape[0]),
                                 coloraxis=axis, hovertemplate=f"query %{{y}}<br>key %{{x}}<br>{label} "
                                 "%{z:.4f}<extra></extra>"), row=1, col=c)
        fig.update_xaxes(tickmode="array", tickvals=xv, ticktext=xt, tickangle=-60, row=1, col=c)
        fig.update_yaxes(tickmode="array", tickvals=yv, ticktext=yt if c == 1 else [""] * len(yv),
                         autorange="reversed", row=1, col=c)
    fig.update_layout(
        coloraxis=dict(colorscale=attention_scale(zmin, zmax, gamma=gamma), cmin=zmin, cmax=zmax,
                       colorbar=dict(title="weight", x=1.0)),
        coloraxis2=dict(colorscale="Greys", cmin=0, cmax=1, showscale=False),
        height=460, margin=dict(l=10, r=10, t=40, b=10))
    return fig


def metrics_frame(approximations) -> pd.DataFrame:
    """One row per pattern: what it keeps and what it costs on this head."""
    rows = []
    for a in approximations:
        rows.append({"pattern": title_of(a.name), "key": a.name,
                     "score entries (share)": a.density, "kept mass": a.kept_mass,
                     "TV distance": a.tv, "KL(approx‖orig)": a.kl, "output rel. error": a.output_error,
                     "empty rows": a.empty_rows})
    return pd.DataFrame(rows)


def layer_metrics_frame(metrics: LayerMetrics) -> pd.DataFrame:
    """All heads of a layer: mean (and worst) of each metric per pattern."""
    def nanmean(x):
        x = np.asarray(x, dtype=np.float64)
        return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")

    rows = []
    for j, name in enumerate(metrics.patterns):
        err = metrics.output_error[:, j]
        rows.append({"pattern": title_of(name), "key": name,
                     "score entries (share)": nanmean(metrics.density[:, j]),
                     "kept mass (mean)": nanmean(metrics.kept_mass[:, j]),
                     "TV (mean)": nanmean(metrics.tv[:, j]),
                     "output rel. error (mean)": nanmean(err),
                     "output rel. error (worst head)": float(np.nanmax(err)) if np.isfinite(err).any()
                     else float("nan"),
                     "best head": int(np.nanargmin(err)) if np.isfinite(err).any() else -1})
    return pd.DataFrame(rows)


def head_summary_figure(summary: HeadSummary) -> go.Figure:
    """Layers x heads: share of attention that is local, on global tokens, and long-range, plus each head's role."""
    n_layers, n_heads = summary.local.shape
    titles = (f"Local (within ±{summary.window})", "Global tokens", "Long-range (other tokens)")
    fig = make_subplots(rows=1, cols=3, subplot_titles=titles, horizontal_spacing=0.05)
    role = summary.role.astype(object)
    for c, z in enumerate((summary.local, summary.global_, summary.long_range), start=1):
        text = np.array([[f"{v:.0%}" for v in row] for row in z], dtype=object) if n_heads <= 16 else None
        fig.add_trace(go.Heatmap(
            z=z.astype(np.float32), x=np.arange(n_heads), y=np.arange(n_layers), coloraxis="coloraxis",
            text=text, texttemplate="%{text}" if text is not None else None,
            customdata=np.stack([role, summary.mean_distance.round(1).astype(object)], axis=-1),
            hovertemplate="layer %{y} head %{x}<br>share %{z:.1%}<br>role: %{customdata[0]}"
                          "<br>mean distance %{customdata[1]}<extra></extra>"), row=1, col=c)
        fig.update_xaxes(title="head", tickmode="array", tickvals=list(range(n_heads)), row=1, col=c)
        fig.update_yaxes(tickmode="array", tickvals=list(range(n_layers)), autorange="reversed",
                         title="layer" if c == 1 else None, row=1, col=c)
    fig.update_layout(coloraxis=dict(colorscale="Viridis", cmin=0, cmax=1, colorbar=dict(title="share")),
                      height=max(300, 60 + 34 * n_layers), margin=dict(l=10, r=10, t=40, b=10),
                      title="Where each head's attention goes")
    return fig


def role_counts(summary: HeadSummary) -> pd.DataFrame:
    """Heads per role and layer (layers as rows)."""
    roles = ("local", "global", "long-range")
    data = {r: (summary.role == r).sum(axis=1) for r in roles}
    df = pd.DataFrame(data)
    df.index.name = "layer"
    return df


def kept_by_layer_frame(summary: HeadSummary) -> pd.DataFrame:
    """Mean kept mass of each fixed pattern per layer (over heads)."""
    df = pd.DataFrame(summary.kept.mean(axis=1), columns=[title_of(p) for p in summary.patterns])
    df.index.name = "layer"
    return df


def cost_figure(rows: tuple[CostRow, ...], *, mark_length: int | None = None) -> go.Figure:
    """Score entries, FLOPs and memory per head against length, log-log, one line per pattern."""
    fig = make_subplots(rows=1, cols=3, subplot_titles=("Attention score entries", "FLOPs",
                                                        "Memory (bytes)"), horizontal_spacing=0.07)
    names = list(dict.fromkeys(r.pattern for r in rows))
    for name in names:
        sel = [r for r in rows if r.pattern == name]
        x = [r.length for r in sel]
        for c, attr in enumerate(("score_entries", "flops", "memory_bytes"), start=1):
            fig.add_trace(go.Scatter(x=x, y=[getattr(r, attr) for r in sel], mode="lines+markers",
                                     name=title_of(name), legendgroup=name, showlegend=c == 1,
                                     line=dict(color=PATTERN_COLORS.get(name),
                                               dash="dot" if name == "synthesizer" else None)),
                          row=1, col=c)
    for c in (1, 2, 3):
        fig.update_xaxes(type="log", title="tokens", row=1, col=c)
        fig.update_yaxes(type="log", row=1, col=c)
        if mark_length:
            fig.add_vline(x=mark_length, line_dash="dot", line_color="grey", row=1, col=c)
    fig.update_layout(height=420, margin=dict(l=10, r=10, t=40, b=10),
                      legend=dict(orientation="h", y=-0.25))
    return fig


def bench_figure(bench) -> go.Figure:
    """Measured milliseconds of full vs windowed attention in torch (a costbench.BenchResult)."""
    fig = go.Figure()
    for label, attr, color in (("full (N×N)", "full_ms", PATTERN_COLORS["full"]),
                               (f"sliding window (±{bench.window})", "window_ms", PATTERN_COLORS["window"])):
        pts = [(r.length, getattr(r, attr)) for r in bench.rows if getattr(r, attr) is not None]
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers",
                                 name=label, line=dict(color=color)))
    no_full = [r.length for r in bench.rows if r.full_ms is None] + list(bench.skipped)
    no_window = [r.length for r in bench.rows if r.window_ms is None] + list(bench.skipped)
    skipped = (f"full: {', '.join(map(str, sorted(no_full))) or 'none'}; "
               f"window: {', '.join(map(str, sorted(no_window))) or 'none'}")
    fig.update_layout(
        title=f"Measured on this machine: full vs windowed attention, one head<br><sub>d={bench.d_head}, "
              f"{bench.threads} torch thread(s); time budget {bench.budget_s:.1f} s, used {bench.elapsed_s:.2f} s; "
              f"not measured (would overrun the budget): {skipped}</sub>",
        xaxis=dict(type="log", title="tokens"), yaxis=dict(type="log", title="milliseconds"),
        height=380, margin=dict(l=10, r=10, t=60, b=10))
    return fig
