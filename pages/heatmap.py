"""Heatmap: one head's attention, or heads/layers combined, with tokens on both axes."""
import streamlit as st

from viz import aggregate, export, ui
from viz.figures.attention import heatmap_figure
from viz.views import heatmap as heatmap_view

result = ui.page("Attention heatmap")
kind = ui.pick_kind(result)
block = ui.view_options(result.block(kind))
layer, head = ui.pick_layer_head(block)
with ui.row():
    combine = st.radio("Combine heads", ["mean", "max"], horizontal=True, disabled=head is not None,
                       help="When 'mean of all heads' is picked: average them, or keep each cell's strongest head.")
    all_layers = st.checkbox("Average over all layers", help="Mean of every layer (after combining heads).")
    zoom = ui.flag_toggle("zoom", "Zoom and pan", "Draw with plotly: drag a box to zoom in, double-click to "
                                                  "zoom out. Loads a larger chart library.")

if all_layers:   # streamed over layers: a long input's layers are recomputed one at a time
    pattern = aggregate.layers_mean(block.pattern, head=head, how=combine)
elif head is None:   # block.pattern[layer]: a long input's cached layer itself, not a stacked copy
    pattern = aggregate.aggregate_heads(block.pattern[layer], how=combine)
else:   # one head: a long input recomputes that head only, not its whole layer
    pattern = block.pattern[layer, head]
where = "all layers (mean)" if all_layers else f"layer {layer}"
which = f"{combine} of heads" if head is None else ui.head_label(head, block.kv_head)
title = f"{ui.KIND_LABELS[kind]} · {where} · {which}"
name = f"attention_{kind}_{'all' if all_layers else f'L{layer}'}_{combine if head is None else f'H{head}'}"
q_labels, k_labels = list(block.queries.labels), list(block.keys.labels)
# The region drawn (the whole matrix unless one was picked): dragged on the canvas or typed, in the URL.
window = ui.pick_window(*pattern.shape)
if not window.is_whole(*pattern.shape):
    title = f"{title} · {window.describe()}"
    name = f"{name}_q{window.q0}-{window.q1 - 1}_k{window.k0}-{window.k1 - 1}"
cell_by_cell = max(window.n_queries, window.n_keys) <= heatmap_view.MAX_SIDE
if not cell_by_cell:
    side = heatmap_view.MAX_SIDE
    st.caption(f"{window.n_queries:,} × {window.n_keys:,} cells are drawn as blocks of up to "
               f"{-(-window.n_queries // side)} × {-(-window.n_keys // side)} positions (each block's largest "
               f"weight); drag a box on the heatmap or zoom into a region above to read tokens and exact weights.")
if zoom and not cell_by_cell:
    st.info(f"The zoomable chart draws at most {heatmap_view.MAX_SIDE} × {heatmap_view.MAX_SIDE} cells: "
            "pick a region above to draw it with plotly; the canvas shows the whole matrix meanwhile.")
if zoom and cell_by_cell:
    region = heatmap_view.window_matrix(pattern, window)
    ui.show_figure(heatmap_figure(region, q_labels[window.q0:window.q1], k_labels[window.k0:window.k1],
                                  causal=block.causal, title=title, query_start=window.q0, key_start=window.k0),
                   name=name)
else:
    # The canvas heatmap spares each new tab plotly's 4.7 MB bundle.
    view = heatmap_view.build_heatmap(pattern, q_labels, k_labels, causal=block.causal, title=title,
                                      font_px=ui.figure_font_px(), file_name=export.safe_name(name),
                                      theme=ui.theme(), window=window, zoomable=True)
    ui.show_view(view.fragment)
    if cell_by_cell:   # built on click, from the shown region only (ui.figure_later says why)
        region = heatmap_view.window_matrix(pattern, window)
        ui.svg_button(ui.figure_later(heatmap_figure, region, q_labels[window.q0:window.q1],
                                      k_labels[window.k0:window.k1], causal=block.causal, title=title,
                                      query_start=window.q0, key_start=window.k0), name=name)
