"""Heatmap: one head's attention, or heads/layers combined, with tokens on both axes."""
import streamlit as st

from viz import aggregate, figures, heatmap_view, ui, ui_share

st.title("Attention heatmap")
result = ui.get_result()
if result is None:
    st.stop()

kind = ui.pick_kind(result)
block = ui.view_options(result.block(kind))
layer, head = ui.pick_layer_head(block)
with ui.row():
    combine = st.radio("Combine heads", ["mean", "max"], horizontal=True, disabled=head is not None,
                       help="When 'mean of all heads' is picked: average them, or keep each cell's strongest head.")
    all_layers = st.checkbox("Average over all layers", help="Mean of every layer (after combining heads).")
    zoom = ui.flag_toggle("zoom", "Zoom and pan", "Draw with plotly: drag a box to zoom in, double-click to "
                                                  "zoom out. Loads a larger chart library.")

layers = block.pattern if all_layers else block.pattern[layer:layer + 1]
if head is None:
    per_layer = aggregate.aggregate_heads(layers, how=combine)  # (n_layers', T_q, T_k)
else:
    per_layer = layers[:, head]
pattern = per_layer.mean(axis=0)
where = "all layers (mean)" if all_layers else f"layer {layer}"
which = f"{combine} of heads" if head is None else f"head {head}"
title = f"{ui.KIND_LABELS[kind]} · {where} · {which}"
name = f"attention_{kind}_{'all' if all_layers else f'L{layer}'}_{combine if head is None else f'H{head}'}"
q_labels, k_labels = list(block.queries.labels), list(block.keys.labels)

if zoom:
    ui.show_figure(figures.attention_heatmap(pattern, q_labels, k_labels, causal=block.causal, title=title),
                   name=name)
else:
    # The canvas heatmap (viz/heatmap_view.py) spares each new tab plotly's 4.7 MB bundle.
    present = ui_share.presenting()
    view = heatmap_view.build_heatmap(
        pattern, q_labels, k_labels, causal=block.causal, title=title,
        font_px=ui_share.PRESENT_FIGURE_FONT + 3 if present else 12, file_name=ui_share.safe_name(name))
    st.html(view.fragment, unsafe_allow_javascript=True)   # trusted code; tokens only as escaped JSON
    # Built on click, from the shown matrix only (ui_share.figure_later says why).
    ui_share.svg_button(ui_share.figure_later(figures.attention_heatmap, pattern, q_labels, k_labels,
                                              causal=block.causal, title=title), name=name)

ui.explain(
    "Each row is a **query** token and shows how it spreads its attention over the **key** tokens (columns); "
    "every row sums to 1. Darker means more weight. Hover or tap a cell (or focus the view and use the arrow "
    "keys) for the exact weight; **Zoom and pan** draws it as a zoomable chart."
    + (" In a decoder a token cannot look ahead: the grey triangle is masked, not zero." if block.causal else "")
    + (" Cross-attention rows are decoder tokens, columns are encoder tokens." if kind == "cross" else ""))
