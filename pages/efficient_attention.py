"""Efficient-attention lab: what sparse and low-rank patterns keep of one head's real attention, and what N² costs."""
import streamlit as st

from viz import efficient as ef
from viz import ui
from viz.figures import efficient as eff

GLOBALS = {"special": "special tokens ([CLS], [SEP], BOS…)", "first": "first token only", "none": "none"}
COLOURS = {"sqrt": "square root (shows faint weights)", "linear": "linear"}
PERCENT = st.column_config.NumberColumn(format="%.1f%%")


def _settings() -> dict:
    """Pattern knobs in an expander, bound to the URL."""
    values = {}
    with st.expander("Pattern settings", expanded=False):
        cols = st.columns(4)
        for i, knob in enumerate(ef.KNOBS):
            with cols[i % 4]:
                key = ui.bind(knob.name, convert=knob.clamp)
                values[knob.name] = int(st.number_input(knob.label, min_value=knob.lo, max_value=knob.hi, step=1,
                                                        key=key, help=knob.help))
            ui.remember(knob.name, values[knob.name])
        values["globals"] = ui.pick("globals", st.radio, "Global tokens (Longformer, BigBird, summary)",
                                    list(GLOBALS), format_func=GLOBALS.get, horizontal=True)
        values["colour"] = ui.pick("colour", st.radio, "Colour scale of attention maps", list(COLOURS),
                                   format_func=COLOURS.get, horizontal=True)
    return values


result = ui.page("Efficient-attention lab",
                 "Sparse and low-rank attention patterns applied to this model's real attention scores: "
                 "what each keeps, what it loses, and what full attention costs as texts grow.")
kind = ui.pick_kind(result)
block = result.block(kind)
layer, head = ui.pick_head(block)
knobs = _settings()
config = ef.pattern_config(knobs, queries=block.queries, keys=block.keys)
key = (result.model.name, result.text, result.pair, result.target, kind)
n_q, n_k = block.pattern.shape[-2:]


def head_section(internals, gamma: float) -> None:
    st.subheader(f"Layer {layer}, head {head}: every pattern on the real scores")
    internals, note = ef.lab_prefix(internals)     # a long causal text: its first tokens, exactly
    if note:
        st.caption(note)
    q_labels, k_labels = block.queries.labels[:internals.query.shape[1]], block.keys.labels[:internals.key.shape[1]]
    if block.causal:
        st.caption("Decoder self-attention: every pattern is intersected with the causal mask (no query sees "
                   "a later token).")
    elif kind == "cross":
        st.caption("Cross attention (decoder queries, encoder keys): no causal mask; windows and blocks are "
                   "centred on each query's proportional position in the encoder text.")
    with st.spinner("Applying the patterns…"):
        approximations = ui.efficient_head(key, layer, head, config, internals)
    table = eff.metrics_frame(approximations)
    pct = ["score entries (share)", "kept mass", "TV distance", "output rel. error"]
    st.dataframe(ef.as_percent(table, pct), hide_index=True, column_order=[c for c in table.columns if c != "key"],
                 column_config={c: PERCENT for c in pct}, key="eff_table")
    st.caption("Kept mass is empty (None) for Linformer, the low-rank bound and Synthesizer: they have no mask. "
               "KL is empty for the low-rank bound: its rows are not distributions.")
    ui.show_figure(eff.pattern_grid_figure(approximations, q_labels, k_labels, gamma=gamma),
                   name=f"efficient_patterns_{kind}_L{layer}_H{head}", key="eff_grid_pattern")
    ui.show_figure(eff.pattern_grid_figure(approximations, q_labels, k_labels, show="mask"),
                   name=f"efficient_masks_{kind}_L{layer}_H{head}", key="eff_grid_mask")

    names = [a.name for a in approximations]
    chosen = ui.pick("pattern", st.selectbox, "Look closer at", names, format_func=eff.title_of)
    info = ef.METHOD_INFO[chosen]
    st.markdown(f"**{info.title}.** {info.how} *Assumes:* {info.assumes} *Breaks:* {info.breaks}")
    ui.show_figure(eff.detail_figure(approximations[0].pattern, approximations[names.index(chosen)],
                                     q_labels, k_labels, max_cells=256, gamma=gamma),
                   name=f"efficient_{chosen}_{kind}_L{layer}_H{head}", key="eff_detail")


def layer_section(internals) -> None:
    st.subheader(f"All {block.n_heads} heads of layer {layer}")
    internals, _ = ef.lab_prefix(internals)
    with st.spinner("Applying the patterns to every head…"):
        lm = ui.efficient_layer(key, layer, config, internals)
    frame = eff.layer_metrics_frame(lm)
    pct = ["score entries (share)", "kept mass (mean)", "TV (mean)", "output rel. error (mean)",
           "output rel. error (worst head)"]
    st.dataframe(ef.as_percent(frame, pct), hide_index=True, column_order=[c for c in frame.columns if c != "key"],
                 column_config={c: PERCENT for c in pct}, key="eff_layer_table")


def summary_section() -> None:
    st.subheader("Layers × heads: which heads are local, which are global")
    summary = ui.efficient_summary(key, config, block.causal, block.pattern)
    ui.show_figure(eff.head_summary_figure(summary), name=f"efficient_summary_{kind}", key="eff_summary")
    c1, c2 = st.columns(2)
    with c1:
        st.caption("Heads per role (largest share)")
        st.dataframe(eff.role_counts(summary), key="eff_roles")
    with c2:
        st.caption("Mean kept mass of each mask, per layer (%)")
        st.dataframe(eff.kept_by_layer_frame(summary).mul(100).round(1), key="eff_kept")
    st.caption(ef.summary_note(summary, n_q) + f" Local: within ±{config.window} positions. Global: the global "
               "tokens outside that window. "
               "Long-range: everything else. A window-based method suits local heads; Longformer and BigBird "
               "also serve global ones; long-range heads need content-based (LSH) or dense methods.")


def cost_section(d_head: int) -> None:
    st.subheader("What it costs as the text grows")
    costs = ef.cost_model(config=config, d_head=d_head, causal=block.causal)
    ui.show_figure(eff.cost_figure(costs, mark_length=n_k), name="efficient_cost", key="eff_cost")
    st.caption(f"Analytic model, one head of one layer, d_head={d_head}, float32; the dotted line is this text "
               f"({n_k} tokens). LSH assumes Reformer's buckets of ~{config.lsh_chunk} tokens; "
               f"Linformer k={config.rank}.")
    with st.spinner("Measuring full vs windowed attention on this machine (at most 3 s, once per server)…"):
        bench = ui.attention_cost_benchmark()
    ui.show_figure(eff.bench_figure(bench), name="efficient_benchmark", key="eff_bench")


internals = ui.layer_internals(kind, layer)      # None: ui has said why (no recording for this model)
if internals is not None:
    head_section(internals, 0.5 if knobs["colour"] == "sqrt" else 1.0)
    layer_section(internals)
summary_section()
cost_section(int(internals.query.shape[-1]) if internals is not None else result.model.d_model // block.n_heads)

st.subheader("The methods")
st.markdown(ef.methods_markdown())
