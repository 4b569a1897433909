"""Head view: one layer's attention as lines from query tokens to key tokens, one colour per head."""
import streamlit as st

from viz import ui
from viz.result import is_lazy
from viz.views import head_view

MASSES = {"off": None, "99%": 0.99, "95%": 0.95, "90%": 0.9, "80%": 0.8, "50%": 0.5}

result = ui.page("Head view")
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
    with c1:
        pair = ui.pick("slice", st.segmented_control, "Sentences", list(head_view.PAIR_SLICES),
                       help="A is the first text, B the second: A->B shows A's tokens attending to B's.")
with c2:
    mass = ui.pick("mass", st.select_slider, "Keep the strongest edges holding this share of each row's weight",
                   list(MASSES), help="Prunes faint edges on the server. Inside the view, 'hide below' hides faint "
                                      "lines instantly.")

try:
    view = head_view.build_head_view(
        block, layers=layer, pair=pair, heads=None if head is None else [head], top_mass=MASSES[mass],
        title=f"{ui.KIND_LABELS[kind]} · layer {layer}", theme=ui.theme())
except ValueError as exc:
    st.warning(str(exc))
    st.stop()

# st.iframe is the supported way to embed a page that runs JavaScript (components.v1.html is
# deprecated); the view is built only from escaped data (tokens as JSON, drawn with textContent).
st.iframe(view.html, height=view.height, alt=f"Head view of layer {layer}")

d1, d2, d3 = st.columns([1, 1, 3])
base = f"head_view_{kind}_L{layer}"
d1.download_button("HTML (this layer)", view.html, file_name=f"{base}.html", mime="text/html",
                   on_click="ignore", help="A standalone page that works offline.")
if is_lazy(result.block(kind).pattern):   # every layer recomputed and pruned: a minute and tens of MB
    d2.caption("All layers in one file: not offered for a text this long (save one layer at a time).")
else:
    d2.download_button("HTML (all layers)", ui.head_view_all_layers_later(
        kind, pair=pair, top_mass=MASSES[mass], title=ui.KIND_LABELS[kind]), file_name=f"head_view_{kind}.html",
        mime="text/html", on_click="ignore", help="One offline page with a layer selector (larger file).")
left_out = view.n_possible - view.n_edges
d3.caption(f"{view.n_edges:,} of {view.n_possible:,} edges sent ({view.kept_mass:.0%} of the attention "
           f"weight): the {left_out:,} left out are the faintest (below 1% of their row"
           + (f", outside the strongest {MASSES[mass]:.0%} of it" if MASSES[mass] else "")
           + (f", or past the {head_view.DEFAULT_MAX_EDGES:,} strongest" if view.n_edges >= head_view.DEFAULT_MAX_EDGES
              else "")
           + f"). At first the view draws at most {head_view.DEFAULT_DRAW_BUDGET:,} of them, hiding the faintest "
             f"below its 'hide below' slider; the line under the view counts what it shows. The PNG button "
             f"inside the view saves an image.")
