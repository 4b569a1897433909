"""Head view: one layer's attention as lines from query tokens to key tokens, one colour per head."""
import streamlit as st

from viz import headview, ui, ui_share

st.title("Head view")
result = ui.get_result()
if result is None:
    st.stop()

kind = ui.pick_kind(result)
block = ui.view_options(result.block(kind))
layer, head = ui.pick_layer_head(block, allow_mean=True)
st.caption("A single head is shown alone at first; 'mean of all heads' shows every head. "
           "Toggle heads in the view's legend.")

# Sentence-pair slices only make sense when the query or key side has a second segment.
has_pair = bool((block.queries.segment_ids == 1).any() or (block.keys.segment_ids == 1).any())
c1, c2 = st.columns([3, 2])
pair = "all"
if has_pair:
    options = list(headview.PAIR_SLICES)
    if st.session_state.get("w_hv_slice") not in options:
        st.session_state.w_hv_slice = ui.query_param("slice", "all") if ui.query_param("slice") in options else "all"
    with c1:
        pair = st.segmented_control("Sentences", options, key="w_hv_slice",
                                    help="A is the first text, B the second: A->B shows A's tokens attending to B's.") or "all"
    ui.set_query_param("slice", None if pair == "all" else pair)
MASSES = {"off": None, "99%": 0.99, "95%": 0.95, "90%": 0.9, "80%": 0.8, "50%": 0.5}
if st.session_state.get("w_hv_mass") not in MASSES:
    st.session_state.w_hv_mass = ui.query_param("mass", "off") if ui.query_param("mass") in MASSES else "off"
with c2:
    mass = st.select_slider("Keep the strongest edges holding this share of each row's weight", list(MASSES),
                            key="w_hv_mass",
                            help="Prunes faint edges on the server. Inside the view, 'hide below' hides faint "
                                 "lines instantly.")
ui.set_query_param("mass", None if mass == "off" else mass)

try:
    view = headview.build_head_view(
        block, layers=layer, pair=pair, heads=None if head is None else [head], top_mass=MASSES[mass],
        title=f"{ui.KIND_LABELS[kind]} · layer {layer}")
except ValueError as exc:
    st.warning(str(exc))
    st.stop()

# st.iframe (Streamlit >= 1.5x) is the supported way to embed HTML that runs JavaScript:
# st.components.v1.html is deprecated in favour of it, and st.html drops scripts unless
# unsafe_allow_javascript puts them into the app's own page. The view is built only from
# escaped data (token text goes in as JSON, rendered with textContent), so the iframe
# runs trusted code.
st.iframe(view.html, height=view.height, alt=f"Head view of layer {layer}")

d1, d2, d3 = st.columns([1, 1, 3])
base = f"head_view_{kind}_L{layer}"
d1.download_button("HTML (this layer)", view.html, file_name=f"{base}.html", mime="text/html",
                   on_click="ignore", help="A standalone page that works offline.")
d2.download_button("HTML (all layers)", ui_share.head_view_all_layers_later(
    kind, pair=pair, top_mass=MASSES[mass], title=ui.KIND_LABELS[kind]), file_name=f"head_view_{kind}.html",
    mime="text/html", on_click="ignore", help="One offline page with a layer selector (larger file).")
d3.caption(f"{view.n_edges:,} of {view.n_possible:,} edges sent ({view.kept_mass:.0%} of the attention "
           f"weight); the PNG button inside the view saves an image.")

ui.explain(
    "Each line joins a **query** token (left) to a **key** token (right); its opacity is the attention "
    "weight and its colour the head. **Hover** a token (tap on touch screens) to see only its lines and, "
    "beside the other column, one small box per head whose strength is that head's weight. "
    "In the legend, **click** a head to hide or show it and **double-click** to show only that head. "
    "'Hide below' removes faint lines; long inputs start with the faintest hidden so the view stays fast."
    + (" In cross-attention the left column is the decoder's tokens and the right the encoder's."
       if kind == "cross" else "")
    + (" In a decoder a token only attends to itself and earlier tokens." if block.causal else ""))
