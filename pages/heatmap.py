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
else:
    layers = block.pattern[layer:layer + 1]
    pattern = (aggregate.aggregate_heads(layers, how=combine) if head is None else layers[:, head]).mean(axis=0)
where = "all layers (mean)" if all_layers else f"layer {layer}"
which = f"{combine} of heads" if head is None else ui.head_label(head, block.kv_head)
title = f"{ui.KIND_LABELS[kind]} · {where} · {which}"
name = f"attention_{kind}_{'all' if all_layers else f'L{layer}'}_{combine if head is None else f'H{head}'}"
q_labels, k_labels = list(block.queries.labels), list(block.keys.labels)

if zoom:
    ui.show_figure(heatmap_figure(pattern, q_labels, k_labels, causal=block.causal, title=title), name=name)
else:
    # The canvas heatmap spares each new tab plotly's 4.7 MB bundle.
    view = heatmap_view.build_heatmap(pattern, q_labels, k_labels, causal=block.causal, title=title,
                                      font_px=ui.figure_font_px(), file_name=export.safe_name(name),
                                      theme=ui.theme())
    ui.show_view(view.fragment)
    # Built on click, from the shown matrix only (ui.figure_later says why).
    ui.svg_button(ui.figure_later(heatmap_figure, pattern, q_labels, k_labels, causal=block.causal,
                                  title=title), name=name)
