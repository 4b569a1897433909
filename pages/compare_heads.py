"""Compare heads: per-head metrics, the head similarity map, side by side views, detectors, corpus mode."""
import streamlit as st

from viz import corpus, figures, stats, ui
from viz import stats_figures as sf
from viz.models import display_name
from viz.settings import SETTINGS

TABS = ("Metrics", "Similarity map", "Side by side", "Detectors", "Corpus")
COMPARE_MODES = ("Two heads", "Two sentences", "Two models")

st.title("Compare heads")
result = ui.get_result()
if result is None:
    st.stop()

kind = ui.pick_kind(result)
block = ui.view_options(result.block(kind))


def _memo(res, blk_kind):
    """Metrics and similarity map of one result's block, kept for this session's reruns."""
    memo = st.session_state.setdefault("cmp_memo", {})
    key = (id(res), res.model.name, res.text, res.pair, res.target, blk_kind, ui.view_flags())
    if key not in memo:
        blk = ui.transform(res.block(blk_kind))
        if len(memo) > 8:
            memo.clear()
        memo[key] = {"metrics": stats.head_metrics(blk)}
    return memo[key]


def metrics_of(res, blk_kind=None):
    return _memo(res, blk_kind or res.kinds[0])["metrics"]


SIMILARITY_ROWS = 96   # beyond this many query tokens the distances are estimated from a sample of rows


def similarity_of(res, blk_kind):
    entry = _memo(res, blk_kind)
    if "sim" not in entry:
        with st.spinner("Comparing every pair of heads…"):
            entry["sim"] = stats.similarity_map(res.block(blk_kind), seed=0, max_rows=SIMILARITY_ROWS)
    return entry["sim"]


def apply_click(picked, source: str) -> None:
    """Open the head clicked in a chart or table (once per new click).

    The pickers' widget state may only change before they are drawn, so the
    choice is parked and applied at the top of the next run.
    """
    if picked is None or st.session_state.get(f"cmp_applied_{source}") == picked:
        return
    st.session_state[f"cmp_applied_{source}"] = picked
    if 0 <= picked[0] < block.n_layers and 0 <= picked[1] < block.n_heads:
        st.session_state.cmp_pending = picked
        st.rerun()


pending = st.session_state.pop("cmp_pending", None)
if pending is not None:
    for name, value in zip(("layer", "head"), pending):
        st.session_state[f"viz_{name}"] = str(value)
        st.session_state[f"w_{name}"] = str(value)
        ui.set_query_param(name, str(value))


def current_head() -> tuple[int, int]:
    layer, head = ui.pick_layer_head(block, allow_mean=False)
    return layer, head if head is not None else 0


def head_figure(blk, layer, head, title):
    return figures.attention_heatmap(blk.pattern[layer, head], blk.queries.labels, blk.keys.labels,
                                     causal=blk.causal, title=title)


# Page-wide metric choice, shared by the tabs and kept in the URL (?metric=...).
metric_default = ui.query_param("metric", "entropy")
if st.session_state.get("cmp_metric") not in stats.METRICS:
    st.session_state.cmp_metric = metric_default if metric_default in stats.METRICS else "entropy"
metric = st.selectbox("Metric", stats.METRICS, key="cmp_metric",
                      help="The per-head number drawn in the grids below.")
ui.set_query_param("metric", metric)
st.caption(stats.METRIC_EXPLANATIONS[metric])

tabs = st.tabs(list(TABS), key="cmp_tab", bind="query-params")
frame = metrics_of(result, kind)

# ------------------------------------------------------------------ metrics
with tabs[0]:
    if tabs[0].open is not False:
        left, right = st.columns([1, 1])
        with right:
            st.subheader("Selected head")
            layer, head = current_head()
            ui.show_figure(head_figure(block, layer, head, f"layer {layer} · head {head}"),
                           name=f"attention_{kind}_L{layer}_H{head}", key="cmp_head_fig")
            row = frame[(frame["layer"] == layer) & (frame["head"] == head)].iloc[0]
            st.caption(" · ".join(f"{m} {row[m]:.3f}" for m in stats.METRICS))
        with left:
            st.subheader(f"{metric} per head")
            grid_event = ui.show_figure(
                sf.metric_grid_figure(stats.metric_grid(frame, metric), metric=metric, selected=(layer, head)),
                name=f"{metric}_grid_{kind}", key="cmp_grid", on_select="rerun", selection_mode="points")
            st.caption("Click a cell (or use the pickers) to open that head's attention.")
        apply_click(sf.selected_head(grid_event), "grid")

        st.subheader("All heads (click a column to sort, a row to open it)")
        table_event = st.dataframe(frame.round(4), hide_index=True, key="cmp_table", on_select="rerun",
                                   selection_mode="single-row")
        rows = table_event.selection.rows if table_event is not None else []
        if rows:
            picked = frame.iloc[rows[0]]
            apply_click((int(picked["layer"]), int(picked["head"])), "table")
        st.download_button("Download metrics (CSV)", frame.to_csv(index=False),
                           file_name=f"head_metrics_{kind}.csv", mime="text/csv")

        st.subheader("Every metric at a glance")
        columns = st.columns(4)
        for k, name in enumerate(stats.METRICS):
            with columns[k % 4]:
                st.markdown(f"**{name}**")
                ui.show_figure(sf.metric_grid_figure(stats.metric_grid(frame, name), metric=name,
                                                     clickable=False, height=230),
                               name=f"{name}_grid_{kind}", key=f"cmp_small_{name}")
                st.caption(stats.METRIC_EXPLANATIONS[name])
        ui.explain(
            "Every head gets one number per metric, computed from its attention matrix on your text "
            "(rows = query tokens, each row sums to 1) and averaged over the query rows. "
            "`entropy` is in nats; `prev_share` skips the first token and `next_share` the last; "
            "`confidence` follows Voita et al. (2019), the special/punctuation shares Clark et al. (2019).")

# ------------------------------------------------------------------ similarity
with tabs[1]:
    if tabs[1].open:
        sim = similarity_of(result, kind)
        layer, head = current_head()
        nearest = stats.nearest_heads(sim, layer, head, k=5)
        sim_event = ui.show_figure(
            sf.similarity_figure(sim.frame(), labels=stats.top_metric(frame), selected=(layer, head),
                                 nearest=nearest),
            name=f"head_similarity_{kind}", key="cmp_sim", on_select="rerun", selection_mode="points")
        apply_click(sf.selected_head(sim_event), "sim")
        n_queries = block.pattern.shape[2]
        if n_queries > SIMILARITY_ROWS:
            st.caption(f"Long text: distances are averaged over {len(stats.query_rows(n_queries, SIMILARITY_ROWS))} "
                       f"evenly spaced of the {n_queries} query tokens, to keep this fast.")
        st.markdown(f"**Heads nearest to layer {layer}, head {head}** (Jensen-Shannon distance, 0 = same)")
        st.dataframe(nearest.round(4), hide_index=True)
        ui.explain(
            "Each dot is a head. Two heads are close when they spread their attention the same way: "
            "for every query token we take the Jensen-Shannon distance between the two heads' rows "
            "(base 2, between 0 and 1) and average it over the tokens (Clark et al. 2019). "
            "Multidimensional scaling then places the heads on a plane so those distances are kept as well "
            "as possible. Click a dot to list its nearest heads.")

# ------------------------------------------------------------------ side by side
with tabs[2]:
    if tabs[2].open:
        mode_default = ui.query_param("compare", COMPARE_MODES[0])
        if st.session_state.get("cmp_mode") not in COMPARE_MODES:
            st.session_state.cmp_mode = mode_default if mode_default in COMPARE_MODES else COMPARE_MODES[0]
        mode = st.segmented_control("Compare", COMPARE_MODES, key="cmp_mode") or COMPARE_MODES[0]
        ui.set_query_param("compare", mode)

        if mode == "Two heads":
            layers, heads = list(range(block.n_layers)), list(range(block.n_heads))

            def _parse(value, fallback):
                try:
                    lay, hd = (int(v) for v in str(value).split("."))
                    return (lay, hd) if lay in layers and hd in heads else fallback
                except ValueError:
                    return fallback

            first = _parse(ui.query_param("a"), (0, 0))
            second = _parse(ui.query_param("b"), (0, min(1, block.n_heads - 1)))
            c = st.columns(4)
            la = c[0].selectbox("Layer A", layers, index=first[0], key="cmp_la")
            ha = c[1].selectbox("Head A", heads, index=first[1], key="cmp_ha")
            lb = c[2].selectbox("Layer B", layers, index=second[0], key="cmp_lb")
            hb = c[3].selectbox("Head B", heads, index=second[1], key="cmp_hb")
            ui.set_query_param("a", f"{la}.{ha}")
            ui.set_query_param("b", f"{lb}.{hb}")
            left, right = st.columns(2)
            with left:
                ui.show_figure(head_figure(block, la, ha, f"A: layer {la} · head {ha}"),
                               name=f"attention_L{la}_H{ha}", key="cmp_a_fig")
            with right:
                ui.show_figure(head_figure(block, lb, hb, f"B: layer {lb} · head {hb}"),
                               name=f"attention_L{lb}_H{hb}", key="cmp_b_fig")
            diff = stats.head_difference(block, (la, ha), (lb, hb))
            ui.show_figure(sf.difference_heatmap(diff, block.queries.labels, block.keys.labels,
                                                 causal=block.causal, title="A − B (red: A more, blue: B more)"),
                           name=f"difference_L{la}H{ha}_L{lb}H{hb}", key="cmp_diff_fig")
            both = frame.set_index(["layer", "head"]).loc[[(la, ha), (lb, hb)]]
            both.index = [f"A (layer {la}, head {ha})", f"B (layer {lb}, head {hb})"]
            st.dataframe(both.round(4))

        elif mode == "Two sentences":
            with st.form("cmp_text2_form", border=False):
                text2 = st.text_input("Second sentence", value=ui.query_param("text2", ""), max_chars=5000,
                                      placeholder="e.g. The animal didn't cross the street because it was too wide.")
                st.form_submit_button("Compare")
            ui.set_query_param("text2", text2.strip() or None)
            if text2.strip():
                result2 = ui.compute(text2.strip(), model=None)
                if result2 is not None:
                    kind2 = kind if kind in result2.kinds else result2.kinds[0]
                    block2 = result2.block(kind2)
                    layer, head = current_head()
                    left, right = st.columns(2)
                    with left:
                        ui.show_figure(head_figure(block, layer, head, f"your text · layer {layer} · head {head}"),
                                       name=f"attention_text1_L{layer}_H{head}", key="cmp_s1_fig")
                        ui.show_figure(sf.metric_grid_figure(stats.metric_grid(frame, metric), metric=metric,
                                                             clickable=False, selected=(layer, head),
                                                             title=f"{metric}, your text"),
                                       name=f"{metric}_grid_text1", key="cmp_s1_grid")
                    frame2 = metrics_of(result2, kind2)
                    with right:
                        ui.show_figure(head_figure(block2, layer, head, f"second sentence · layer {layer} · head {head}"),
                                       name=f"attention_text2_L{layer}_H{head}", key="cmp_s2_fig")
                        ui.show_figure(sf.metric_grid_figure(stats.metric_grid(frame2, metric), metric=metric,
                                                             clickable=False, selected=(layer, head),
                                                             title=f"{metric}, second sentence"),
                                       name=f"{metric}_grid_text2", key="cmp_s2_grid")
                    pair = frame.merge(frame2, on=["layer", "head"], suffixes=(" (text 1)", " (text 2)"))
                    st.dataframe(pair[(pair["layer"] == layer) & (pair["head"] == head)].round(4), hide_index=True)
            else:
                st.info("Type a second sentence to see the same head on both.")

        else:  # Two models
            choices = [m for m in ui.model_choices() if m != ui.CUSTOM]
            default2 = ui.query_param("model2", "")
            with st.form("cmp_model2_form", border=False):
                options = choices + ([] if SETTINGS.server_mode else [ui.CUSTOM])
                picked = st.selectbox("Second model", options,
                                      index=options.index(default2) if default2 in options else
                                      (options.index(ui.CUSTOM) if default2 and ui.CUSTOM in options else 0),
                                      format_func=lambda m: m if m == ui.CUSTOM else display_name(m))
                custom = ""
                if not SETTINGS.server_mode:
                    custom = st.text_input("…or a hub id / local folder", max_chars=300,
                                           value=default2 if default2 and default2 not in choices else "")
                st.form_submit_button("Compare")
            model2 = custom.strip() or (picked if picked != ui.CUSTOM else "")
            if model2:
                ui.set_query_param("model2", model2)
                result2 = ui.compute(result.text, pair=result.pair or "", target=result.target or "",
                                     model=model2)
                if result2 is not None:
                    kind2 = kind if kind in result2.kinds else result2.kinds[0]
                    frame2 = metrics_of(result2, kind2)
                    left, right = st.columns(2)
                    with left:
                        ui.show_figure(sf.metric_grid_figure(stats.metric_grid(frame, metric), metric=metric,
                                                             clickable=False,
                                                             title=f"{display_name(result.model.name)}"),
                                       name=f"{metric}_grid_model1", key="cmp_m1_grid")
                    with right:
                        ui.show_figure(sf.metric_grid_figure(stats.metric_grid(frame2, metric), metric=metric,
                                                             clickable=False,
                                                             title=f"{display_name(result2.model.name)}"),
                                       name=f"{metric}_grid_model2", key="cmp_m2_grid")
                    st.caption("Same text, same metric; the two models may have different numbers of layers "
                               "and heads, and split the text into different tokens.")
                    summary = {"model": [display_name(result.model.name),
                                         display_name(result2.model.name)]}
                    for m in stats.METRICS:
                        summary[f"mean {m}"] = [frame[m].mean(), frame2[m].mean()]
                    st.dataframe(summary, hide_index=True)

# ------------------------------------------------------------------ detectors
with tabs[3]:
    if tabs[3].open:
        def decoder_detectors():
            """Detector scores on a repeated random word sequence (Olsson et al. 2022), or None."""
            loaded = ui.loaded_model()
            if loaded is None:
                return None
            try:
                probe = stats.repeated_random_text(loaded.tokenizer.get_vocab(), seed=0,
                                                   pool=corpus.word_pool(), max_tokens=loaded.info.max_length)
            except ValueError as exc:
                st.warning(str(exc))
                return None
            if result.family == "encoder-decoder":
                probe_result = ui.compute(result.text, pair="", target=probe)
            else:
                probe_result = ui.compute(probe)
            if probe_result is None:
                return None
            with st.expander("The test input: a random word sequence shown twice"):
                st.text(probe.strip())
            return stats.detect_heads(probe_result.block(kind))

        det = decoder_detectors() if block.causal else stats.detect_heads(block)
        if det is not None:
            names = [n for n in stats.DETECTORS if n in det.columns]
            columns = st.columns(len(names))
            for col, name in zip(columns, names):
                with col:
                    st.markdown(f"**{name.replace('_', '-')} score**")
                    ui.show_figure(sf.metric_grid_figure(stats.metric_grid(det, name), metric=name,
                                                         clickable=False, zmin=0, zmax=1),
                                   name=f"{name}_detector_{kind}", key=f"cmp_det_{name}")
                    st.caption(stats.DETECTOR_EXPLANATIONS[name])
                    top = det.sort_values(name, ascending=False).head(3)
                    st.caption("Strongest: " + ", ".join(
                        f"L{int(r.layer)} H{int(r.head)} ({getattr(r, name):.2f})" for r in top.itertuples()))
            st.dataframe(det.round(4), hide_index=True)
            ui.explain(
                "Detectors look for heads with a known job. In a decoder: **previous-token** heads look one "
                "token back, **duplicate-token** heads look at earlier copies of the same token, and "
                "**induction** heads look at the token that *followed* the earlier copy, which lets the "
                "model continue a repeated pattern (Olsson et al. 2022). They are measured on a random "
                "sequence of words repeated twice, where only an induction head can predict the second half. "
                "In an encoder: **positional** heads mostly look at a fixed neighbour, and **special** heads "
                "park their attention on [CLS]/[SEP] (Voita et al. 2019; Clark et al. 2019). "
                "Scores run from 0 to 1.")

# ------------------------------------------------------------------ corpus
with tabs[4]:
    if tabs[4].open:
        cap = SETTINGS.upload_max_lines
        source = st.radio("Corpus", ("Built-in sample corpus", "Upload a .txt or .csv file"),
                          key="cmp_corpus_source", horizontal=True)
        chosen = None
        try:
            if source.startswith("Built-in"):
                chosen = corpus.sample_corpus(max_texts=cap)
                st.caption(f"{chosen.total} varied English sentences shipped with the app "
                           f"(data/sample_corpus.txt).")
            else:
                upload = st.file_uploader("One text a line (.txt) or a table (.csv)", type=["txt", "csv"],
                                          key="cmp_corpus_file")
                if upload is not None:
                    raw = upload.getvalue()
                    column = None
                    if upload.name.lower().endswith(".csv"):
                        column = st.selectbox("Column holding the texts",
                                              corpus.csv_columns(raw, name=upload.name), key="cmp_corpus_col")
                    chosen = corpus.read_corpus(raw, name=upload.name, column=column, max_texts=cap)
        except corpus.CorpusError as exc:
            st.error(str(exc))
        if chosen is not None:
            if chosen.message:
                st.warning(chosen.message)
            job_key = (chosen.source, chosen.texts[:3], len(chosen.texts), result.model.name, kind)
            job = st.session_state.get("cmp_corpus_job")
            c1, c2 = st.columns([1, 1])
            start = c1.button(f"Analyse {len(chosen.texts)} texts", type="primary", key="cmp_corpus_start")
            stop = c2.button("Stop", key="cmp_corpus_stop")
            if start:
                job = {"key": job_key, "texts": chosen.texts, "acc": corpus.MetricAccumulator(),
                       "done": 0, "stopped": False}
                st.session_state.cmp_corpus_job = job
            if stop and job is not None:
                job["stopped"] = True
            if job is not None and job["key"] == job_key:
                total = len(job["texts"])
                bar = st.progress(job["done"] / total, text=f"{job['done']} / {total} texts")
                if not job["stopped"] and job["done"] < total:
                    loaded = ui.loaded_model()
                    if loaded is not None:
                        from viz.capture import InputError, capture

                        def run(text):
                            try:
                                return capture(text, model=loaded).block(kind)
                            except InputError as exc:
                                raise ValueError(str(exc)) from None

                        def progress(done, _total, offset=job["done"]):
                            job["done"] = offset + done
                            bar.progress(job["done"] / total, text=f"{job['done']} / {total} texts")

                        try:
                            corpus.corpus_metrics(job["texts"][job["done"]:], run, progress=progress,
                                                  should_stop=lambda: job["stopped"], into=job["acc"])
                        except corpus.CorpusError as exc:
                            st.error(str(exc))
                if job["acc"].n_texts:
                    table = job["acc"].table()
                    if job["stopped"] and job["done"] < total:
                        st.info(f"Stopped after {job['done']} of {total} texts; the means below use those.")
                    else:
                        st.success(f"Mean metrics over {job['acc'].n_texts} texts.")
                    for message in job["acc"].failed[:5]:
                        st.caption(f"Skipped {message}")
                    ui.show_figure(sf.metric_grid_figure(stats.metric_grid(table, metric), metric=metric,
                                                         clickable=False, title=f"mean {metric} over the corpus"),
                                   name=f"corpus_{metric}_grid", key="cmp_corpus_grid")
                    st.dataframe(table.round(4), hide_index=True)
                    st.download_button("Download corpus metrics (CSV)", table.to_csv(index=False),
                                       file_name="corpus_head_metrics.csv", mime="text/csv",
                                       key="cmp_corpus_csv")
        ui.explain(
            "Corpus mode runs every text through the current model and averages each head's metrics "
            "over the texts (each text counts the same). Press **Stop** at any time: the means so far "
            f"are kept. At most {cap} texts are used.")
