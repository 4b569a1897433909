"""Efficient-attention lab: what sparse and low-rank patterns keep of one head's real attention, and what N² costs."""
import streamlit as st

from viz import efficient as ef
from viz import efficient_figures as eff
from viz import ui

# URL parameter -> (label, default, min, max, help); all integers.
KNOBS = {
    "window": ("Window w (each side)", 4, 0, 256, "Sliding window, dilated window, Longformer, BigBird"),
    "dilation": ("Dilation d", 2, 1, 32, "Dilated window: every d-th key"),
    "block_size": ("Block size", 8, 1, 512, "Block-local attention"),
    "random": ("Random keys per query", 2, 0, 64, "BigBird"),
    "buckets": ("LSH buckets", 8, 2, 64, "Reformer: buckets per hash round"),
    "hashes": ("LSH rounds", 2, 1, 8, "Reformer: a key is visible if it shares a bucket in any round"),
    "rank": ("Rank k", 8, 1, 256, "Linformer projection rows and the low-rank bound"),
    "seed": ("Seed", 0, 0, 10_000, "Every random choice: BigBird keys, LSH rotations, projections"),
}
GLOBALS = {"special": "special tokens ([CLS], [SEP], BOS…)", "first": "first token only", "none": "none"}
COLOURS = {"sqrt": "square root (shows faint weights)", "linear": "linear"}


def _int_param(name: str) -> int:
    _, default, lo, hi, _ = KNOBS[name]
    try:
        return min(hi, max(lo, int(ui.query_param(name, default))))
    except (TypeError, ValueError):
        return default


def _settings() -> dict:
    """Pattern knobs in an expander, initialised from and mirrored to the URL."""
    values = {}
    with st.expander("Pattern settings", expanded=False):
        cols = st.columns(4)
        for i, (name, (label, _default, lo, hi, help_)) in enumerate(KNOBS.items()):
            key = f"eff_{name}"
            if key not in st.session_state:
                st.session_state[key] = _int_param(name)
            with cols[i % 4]:
                values[name] = int(st.number_input(label, min_value=lo, max_value=hi, step=1, key=key, help=help_))
            ui.set_query_param(name, values[name] if values[name] != KNOBS[name][1] else None)
        if "eff_globals" not in st.session_state:
            g = ui.query_param("globals", "special")
            st.session_state.eff_globals = g if g in GLOBALS else "special"
        values["globals"] = st.radio("Global tokens (Longformer, BigBird, summary)", list(GLOBALS),
                                     format_func=GLOBALS.get, key="eff_globals", horizontal=True)
        ui.set_query_param("globals", None if values["globals"] == "special" else values["globals"])
        if "eff_colour" not in st.session_state:
            c = ui.query_param("colour", "sqrt")
            st.session_state.eff_colour = c if c in COLOURS else "sqrt"
        values["colour"] = st.radio("Colour scale of attention maps", list(COLOURS), format_func=COLOURS.get,
                                    key="eff_colour", horizontal=True)
        ui.set_query_param("colour", None if values["colour"] == "sqrt" else values["colour"])
    return values


def _globals(choice: str, seq) -> tuple[int, ...]:
    if choice == "none":
        return ()
    if choice == "first":
        return (0,)
    return ef.default_globals(seq)


def _input_key(result, kind: str) -> tuple:
    """What identifies a captured input in the shared caches below."""
    return (result.model.name, result.text, result.pair, result.target, kind)


@st.cache_resource(max_entries=16, show_spinner=False)
def _head(key: tuple, layer: int, head: int, config: ef.PatternConfig, _internals):
    return ef.approximate_head(ef.HeadInput.from_internals(_internals, head), config=config)


@st.cache_resource(max_entries=16, show_spinner=False)
def _layer(key: tuple, layer: int, config: ef.PatternConfig, _internals) -> ef.LayerMetrics:
    return ef.layer_metrics(_internals, config=config)


@st.cache_resource(max_entries=8, show_spinner=False)
def _summary(key: tuple, config: ef.PatternConfig, causal: bool, _pattern) -> ef.HeadSummary:
    return ef.head_summary(_pattern, config=config, causal=causal)


@st.cache_resource(show_spinner=False)
def _bench():
    from viz import costbench   # torch: only imported when the measurement is shown
    return costbench.run()


PERCENT = st.column_config.NumberColumn(format="%.1f%%")


def _as_percent(df, columns):
    df = df.copy()
    for c in columns:
        df[c] = df[c] * 100
    return df


st.title("Efficient-attention lab")
st.caption("Sparse and low-rank attention patterns applied to this model's real attention scores: "
           "what each keeps, what it loses, and what full attention costs as texts grow.")
result = ui.get_result()
if result is None:
    st.stop()

kind = ui.pick_kind(result)
block = result.block(kind)
layer, head = ui.pick_layer_head(block, allow_mean=False)
knobs = _settings()
config = ef.PatternConfig(
    window=knobs["window"], dilation=knobs["dilation"], block=knobs["block_size"], n_random=knobs["random"],
    n_buckets=knobs["buckets"], n_hashes=knobs["hashes"], rank=knobs["rank"], seed=knobs["seed"],
    global_queries=_globals(knobs["globals"], block.queries), global_keys=_globals(knobs["globals"], block.keys))
key = _input_key(result, kind)
n_q, n_k = block.pattern.shape[-2:]

ui.explain(
    "Full attention scores every query against every key: N² numbers per head and layer. Efficient "
    "attention methods compute only some of them (a **mask**) or squeeze the keys into k rows "
    "(**low rank**). Here each method is applied to the model's *real* pre-softmax scores for the chosen "
    "head: the softmax is taken over the allowed keys only, so you see the attention that method would "
    "produce on this text, without retraining.\n\n"
    "- **kept mass**: share of the original attention that falls inside the mask (1 = nothing lost). "
    "For a masked softmax the total-variation distance is exactly 1 − kept mass.\n"
    "- **TV distance**: half the L1 distance between the original and the new row, averaged over queries.\n"
    "- **output rel. error**: how far the head's output (attention-weighted sum of the values) moves.\n"
    "- A query left with nothing to attend to (possible with LSH in cross attention) produces no output "
    "and counts as fully lost.\n\n"
    "The model was trained with full attention; models trained with these patterns adapt to them, so the "
    "errors here show what a pattern assumes about attention, not how well a retrained model would do."
    + (" This is a decoder: every pattern is intersected with the causal mask." if block.causal else "")
    + (" Cross attention: queries are decoder tokens, keys encoder tokens; windows are centred on the "
       "proportional position and there is no causal mask." if kind == "cross" else ""))


def head_section(internals, gamma: float) -> None:
    st.subheader(f"Layer {layer}, head {head}: every pattern on the real scores")
    if block.causal:
        st.caption("Decoder self-attention: every pattern is intersected with the causal mask (no query sees "
                   "a later token).")
    elif kind == "cross":
        st.caption("Cross attention (decoder queries, encoder keys): no causal mask; windows and blocks are "
                   "centred on each query's proportional position in the encoder text.")
    with st.spinner("Applying the patterns…"):
        approximations = _head(key, layer, head, config, internals)
    table = eff.metrics_frame(approximations)
    pct = ["score entries (share)", "kept mass", "TV distance", "output rel. error"]
    st.dataframe(_as_percent(table, pct), hide_index=True, column_order=[c for c in table.columns if c != "key"],
                 column_config={c: PERCENT for c in pct}, key="eff_table")
    st.caption("Kept mass is empty (None) for Linformer, the low-rank bound and Synthesizer: they have no mask. "
               "KL is empty for the low-rank bound: its rows are not distributions.")
    ui.show_figure(eff.pattern_grid(approximations, block.queries.labels, block.keys.labels, gamma=gamma),
                   name=f"efficient_patterns_{kind}_L{layer}_H{head}", key="eff_grid_pattern")
    ui.show_figure(eff.pattern_grid(approximations, block.queries.labels, block.keys.labels, show="mask"),
                   name=f"efficient_masks_{kind}_L{layer}_H{head}", key="eff_grid_mask")

    names = [a.name for a in approximations]
    if "eff_pattern" not in st.session_state:
        wanted = ui.query_param("pattern", ef.WINDOW)
        st.session_state.eff_pattern = wanted if wanted in names else ef.WINDOW
    chosen = st.selectbox("Look closer at", names, format_func=eff.title_of, key="eff_pattern")
    ui.set_query_param("pattern", chosen)
    info = ef.METHOD_INFO[chosen]
    st.markdown(f"**{info.title}.** {info.how} *Assumes:* {info.assumes} *Breaks:* {info.breaks}")
    ui.show_figure(eff.detail_figure(approximations[0].pattern, approximations[names.index(chosen)],
                                     block.queries.labels, block.keys.labels, max_cells=256, gamma=gamma),
                   name=f"efficient_{chosen}_{kind}_L{layer}_H{head}", key="eff_detail")


def layer_section(internals) -> None:
    st.subheader(f"All {block.n_heads} heads of layer {layer}")
    with st.spinner("Applying the patterns to every head…"):
        lm = _layer(key, layer, config, internals)
    frame = eff.layer_metrics_frame(lm)
    pct = ["score entries (share)", "kept mass (mean)", "TV (mean)", "output rel. error (mean)",
           "output rel. error (worst head)"]
    st.dataframe(_as_percent(frame, pct), hide_index=True, column_order=[c for c in frame.columns if c != "key"],
                 column_config={c: PERCENT for c in pct}, key="eff_layer_table")


def summary_section() -> None:
    st.subheader("Layers × heads: which heads are local, which are global")
    summary = _summary(key, config, block.causal, block.pattern)
    ui.show_figure(eff.head_summary_figure(summary), name=f"efficient_summary_{kind}", key="eff_summary")
    c1, c2 = st.columns(2)
    with c1:
        st.caption("Heads per role (largest share)")
        st.dataframe(eff.role_counts(summary), key="eff_roles")
    with c2:
        st.caption("Mean kept mass of each mask, per layer (%)")
        st.dataframe(eff.kept_by_layer_frame(summary).mul(100).round(1), key="eff_kept")
    st.caption(f"Local: within ±{config.window} positions. Global: the global tokens outside that window. "
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
        bench = _bench()
    ui.show_figure(eff.bench_figure(bench), name="efficient_benchmark", key="eff_bench")


internals = ui.get_internals(kind, layer)      # None: ui has said why (no recording for this model)
if internals is not None:
    head_section(internals, 0.5 if knobs["colour"] == "sqrt" else 1.0)
    layer_section(internals)
summary_section()
cost_section(int(internals.query.shape[-1]) if internals is not None else result.model.d_model // block.n_heads)

st.subheader("The methods")
st.markdown("\n".join(
    ["| method | what it does | assumes | breaks when |", "|---|---|---|---|"]
    + [f"| **{m.title}** | {m.how} | {m.assumes} | {m.breaks} |" for m in ef.METHODS]))
