"""Model view: every layer x head as a thumbnail; click one to open it large."""
import streamlit as st

from viz import ui
from viz.figures.model_view import model_view_figure, thumbnail_from_selection
from viz.figures.overview import attention_figure
from viz.result import is_lazy

MOSAIC_KEY = "model_view_mosaic"

result = ui.page("Model view")
kind = ui.pick_kind(result)
raw_block = result.block(kind)
block = ui.view_options(raw_block)
# A long result's thumbnails were streamed from its raw weights during the capture; with the options on,
# redoing them would recompute and transform every layer, so they stay raw (the open head below is not).
mosaic_block = raw_block if block is not raw_block and is_lazy(raw_block.pattern) else block


def _open_clicked() -> None:
    """Selection callback: make the clicked thumbnail the picked layer and head."""
    picked = thumbnail_from_selection(st.session_state.get(MOSAIC_KEY), block.n_heads)
    if picked is not None and 0 <= picked[0] < block.n_layers:
        ui.select_layer_head(*picked)


scale = st.radio("Colour scale", ["each head", "shared"], horizontal=True, key="w_mv_scale",
                 help="'each head' scales every thumbnail to its own maximum so faint heads show their "
                      "structure; 'shared' uses one scale so thumbnails can be compared.")
mosaic_slot = st.container()
st.subheader("Open head")
layer, head = ui.pick_layer_head(block, allow_mean=True)

with mosaic_slot:
    # gamma 0.5 (a square-root scale): a few strong weights (often on [CLS]/[SEP]) would
    # otherwise leave the rest of each thumbnail white.
    fig = model_view_figure(mosaic_block, normalize="head" if scale == "each head" else "global",
                            gamma=0.5, selected=None if head is None else (layer, head), theme=ui.theme())
    st.caption("Rows are layers, columns are heads (square-root colour scale). "
               "Click a thumbnail to open it below."
               + (f" Long text ({len(raw_block.queries):,} tokens): each thumbnail pixel is the mean of a block "
                  f"of about {-(-len(raw_block.queries) // 64)} × {-(-len(raw_block.keys) // 64)} weights"
                  + (", of the model's raw weights: the word-level and hiding options apply to the head opened "
                     "below." if mosaic_block is not block else ".") if is_lazy(raw_block.pattern) else ""))
    ui.show_figure(fig, name=f"model_view_{kind}", key=MOSAIC_KEY, on_select=_open_clicked,
                   selection_mode="points")

pattern = block.pattern[layer].mean(axis=0) if head is None else block.pattern[layer, head]
which = "mean of heads" if head is None else ui.head_label(head, block.kv_head)
big = attention_figure(pattern, block.queries.labels, block.keys.labels, causal=block.causal,
                       title=f"{ui.KIND_LABELS[kind]} · layer {layer} · {which}")
ui.show_figure(big, name=f"attention_{kind}_L{layer}_{'mean' if head is None else f'H{head}'}")
