"""The tabs of the compare-heads page: metrics, similarity map, side by side, detectors, corpus.

Each tab is one function (result, kind, block, metric) drawn by pages/compare_heads.py; the numbers
come from viz.stats and viz.corpus, memoised in viz.ui.compute, the figures from viz.figures.stats.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from viz import corpus, models, stats
from viz.figures import stats as sf
from viz.figures.overview import attention_figure, difference_blocks_figure
from viz.result import AttentionResult, Block, head_label
from viz import settings
from viz.ui import compute, state
from viz.ui.output import explain_box, show_figure
from viz.ui.widgets import pick, pick_head

COMPARE_MODES = ("Two heads", "Two sentences", "Two models")


def _head_figure(block: Block, layer: int, head: int, title: str):
    # long inputs: drawn as blocks of their largest weight (the title says so)
    return attention_figure(block.pattern[layer, head], block.queries.labels, block.keys.labels,
                            causal=block.causal, title=title)


def _grid(frame, metric: str, *, key: str, name: str, title: str = "", selected=None, **kwargs):
    return show_figure(sf.metric_grid_figure(stats.metric_grid(frame, metric), metric=metric, title=title,
                                             selected=selected, **kwargs), name=name, key=key)


def metrics_tab(result: AttentionResult, kind: str, block: Block, metric: str) -> None:
    frame = compute.head_metrics(result, block)
    left, right = st.columns([1, 1])
    with right:
        st.subheader("Selected head")
        layer, head = pick_head(block)
        show_figure(_head_figure(block, layer, head, f"layer {layer} · {head_label(head, block.kv_head)}"),
                    name=f"attention_{kind}_L{layer}_H{head}", key="cmp_head_fig")
        row = frame[(frame["layer"] == layer) & (frame["head"] == head)].iloc[0]
        st.caption(" · ".join(f"{m} {row[m]:.3f}" for m in stats.METRICS))
    with left:
        st.subheader(f"{metric} per head")
        grid_event = show_figure(
            sf.metric_grid_figure(stats.metric_grid(frame, metric), metric=metric, selected=(layer, head),
                                  kv_head=block.kv_head),
            name=f"{metric}_grid_{kind}", key="cmp_grid", on_select="rerun", selection_mode="points")
        st.caption("Click a cell (or use the pickers) to open that head's attention.")
    if frame.attrs.get("sampled_rows"):   # a long text under the view options: estimates, and by how much
        worst = frame.attrs["stderr"]
        st.caption(f"Long text: with these options the metrics are estimated from "
                   f"{frame.attrs['sampled_rows']} evenly spaced query tokens of every layer; standard error at "
                   f"most " + ", ".join(f"{m} ±{worst[m]:.3f}" for m in stats.METRICS) + ".")
    state.park_pick("grid", sf.selected_head(grid_event), block.n_layers, block.n_heads)

    st.subheader("All heads (click a column to sort, a row to open it)")
    table_event = st.dataframe(frame.round(4), hide_index=True, key="cmp_table", on_select="rerun",
                               selection_mode="single-row")
    rows = table_event.selection.rows if table_event is not None else []
    if rows:
        picked = frame.iloc[rows[0]]
        state.park_pick("table", (int(picked["layer"]), int(picked["head"])), block.n_layers, block.n_heads)
    st.download_button("Download metrics (CSV)", frame.to_csv(index=False),
                       file_name=f"head_metrics_{kind}.csv", mime="text/csv")

    st.subheader("Every metric at a glance")
    columns = st.columns(4)
    for k, name in enumerate(stats.METRICS):
        with columns[k % 4]:
            st.markdown(f"**{name}**")
            _grid(frame, name, key=f"cmp_small_{name}", name=f"{name}_grid_{kind}", clickable=False, height=230)
            st.caption(stats.METRIC_EXPLANATIONS[name])
    explain_box(
        "Every head gets one number per metric, computed from its attention matrix on your text "
        "(rows = query tokens, each row sums to 1) and averaged over the query rows. "
        "`entropy` is in nats; `prev_share` skips the first token and `next_share` the last; "
        "`confidence` follows Voita et al. (2019), the special/punctuation shares Clark et al. (2019); "
        "`first_token_share` is the weight on the first token (an attention sink, Xiao et al. 2023).",
        title="About these metrics")


def similarity_tab(result: AttentionResult, kind: str, block: Block, metric: str) -> None:
    frame = compute.head_metrics(result, block)
    with st.spinner("Comparing every pair of heads…"):
        sim = compute.similarity_map(result, kind)
    layer, head = pick_head(block)
    # A long result's map comes from its thumbnails; the table from this head's token rows.
    row = compute.distances_from(result, kind, layer, head) if sim.basis == "thumbnails" else None
    nearest = stats.nearest_heads(sim, layer, head, k=5, row=row)
    sim_event = show_figure(
        sf.similarity_figure(sim.frame(), labels=stats.top_metric(frame), selected=(layer, head), nearest=nearest),
        name=f"head_similarity_{kind}", key="cmp_sim", on_select="rerun", selection_mode="points")
    state.park_pick("sim", sf.selected_head(sim_event), block.n_layers, block.n_heads)
    n_queries = block.pattern.shape[2]
    if sim.basis == "thumbnails":
        thumb = result.block(kind).pattern.summary.thumbs.shape[-1]
        n_rows = len(stats.query_rows(n_queries, compute.SIMILARITY_ROWS))
        st.caption(f"Long text ({n_queries:,} tokens): the map compares the heads on their {thumb} × {thumb} "
                   f"block means (the model view's thumbnails), which blur single tokens, so heads look closer "
                   f"than they are; the table below is computed on {n_rows} evenly spaced query tokens, as for "
                   f"shorter texts.")
    elif n_queries > compute.SIMILARITY_ROWS:
        st.caption(f"Long text: distances are averaged over "
                   f"{len(stats.query_rows(n_queries, compute.SIMILARITY_ROWS))} evenly spaced of the "
                   f"{n_queries} query tokens, to keep this fast.")
    st.markdown(f"**Heads nearest to layer {layer}, head {head}** (Jensen-Shannon distance, 0 = same)")
    st.dataframe(nearest.round(4), hide_index=True)
    explain_box(
        "Each dot is a head. Two heads are close when they spread their attention the same way: "
        "for every query token we take the Jensen-Shannon distance between the two heads' rows "
        "(base 2, between 0 and 1) and average it over the tokens (Clark et al. 2019). "
        "Multidimensional scaling then places the heads on a plane so those distances are kept as well "
        "as possible. Click a dot to list its nearest heads.", title="About the similarity map")


def _url_head(name: str, block: Block, default: tuple[int, int]) -> tuple[int, int]:
    """Head A or B from the URL (``layer.head``), or ``default`` when absent or out of range."""
    try:
        lay, hd = (int(v) for v in str(state.url_value(name, "")).split("."))
    except ValueError:
        return default
    return (lay, hd) if 0 <= lay < block.n_layers and 0 <= hd < block.n_heads else default


def _two_heads(block: Block, frame) -> None:
    picked = []
    cols = st.columns(4)
    layers, heads = list(range(block.n_layers)), list(range(block.n_heads))
    for i, name in enumerate(("a", "b")):
        lay, hd = _url_head(name, block, (0, min(i, block.n_heads - 1)))
        la = cols[2 * i].selectbox(f"Layer {name.upper()}", layers, index=lay, key=f"cmp_l{name}")
        ha = cols[2 * i + 1].selectbox(f"Head {name.upper()}", heads, index=hd, key=f"cmp_h{name}")
        state.set_url(name, f"{la}.{ha}")
        picked.append((la, ha))
    (la, ha), (lb, hb) = picked
    left, right = st.columns(2)
    with left:
        show_figure(_head_figure(block, la, ha, f"A: layer {la} · head {ha}"), name=f"attention_L{la}_H{ha}",
                    key="cmp_a_fig")
    with right:
        show_figure(_head_figure(block, lb, hb, f"B: layer {lb} · head {hb}"), name=f"attention_L{lb}_H{hb}",
                    key="cmp_b_fig")
    diff = stats.head_difference(block, (la, ha), (lb, hb))
    show_figure(difference_blocks_figure(diff, block.queries.labels, block.keys.labels, causal=block.causal,
                                         title="A − B (red: A more, blue: B more)"),
                name=f"difference_L{la}H{ha}_L{lb}H{hb}", key="cmp_diff_fig")
    both = frame.set_index(["layer", "head"]).loc[[(la, ha), (lb, hb)]]
    both.index = [f"A (layer {la}, head {ha})", f"B (layer {lb}, head {hb})"]
    st.dataframe(both.round(4))


def _two_sentences(result: AttentionResult, kind: str, block: Block, frame, metric: str) -> None:
    with st.form("cmp_text2_form", border=False):
        text2 = st.text_input("Second sentence", key=state.bind("text2"), max_chars=5000,
                              placeholder="e.g. The animal didn't cross the street because it was too wide.")
        st.form_submit_button("Compare")
    state.remember("text2", text2.strip() or None)
    if not text2.strip():
        st.info("Type a second sentence to see the same head on both.")
        return
    result2 = compute.result_for(text2.strip(), model=state.get("model"))
    if result2 is None:
        return
    kind2 = kind if kind in result2.kinds else result2.kinds[0]
    block2 = result2.block(kind2)
    frame2 = compute.head_metrics(result2, block2)
    layer, head = pick_head(block)
    for col, (blk, frm, which) in zip(st.columns(2), ((block, frame, "your text"),
                                                      (block2, frame2, "second sentence"))):
        with col:
            n = "text1" if which == "your text" else "text2"
            show_figure(_head_figure(blk, layer, head, f"{which} · layer {layer} · head {head}"),
                        name=f"attention_{n}_L{layer}_H{head}", key=f"cmp_s{n[-1]}_fig")
            _grid(frm, metric, key=f"cmp_s{n[-1]}_grid", name=f"{metric}_grid_{n}", clickable=False,
                  selected=(layer, head), title=f"{metric}, {which}")
    pair = frame.merge(frame2, on=["layer", "head"], suffixes=(" (text 1)", " (text 2)"))
    st.dataframe(pair[(pair["layer"] == layer) & (pair["head"] == head)].round(4), hide_index=True)


def _two_models(result: AttentionResult, kind: str, frame, metric: str) -> None:
    choices = [m for m in state.model_choices() if m != state.CUSTOM]
    options = choices + ([] if settings.SETTINGS.server_mode else [state.CUSTOM])
    default2 = state.url_value("model2", "")
    with st.form("cmp_model2_form", border=False):
        picked = st.selectbox("Second model", options,
                              index=options.index(default2) if default2 in options else
                              (options.index(state.CUSTOM) if default2 and state.CUSTOM in options else 0),
                              format_func=lambda m: m if m == state.CUSTOM else models.display_name(m))
        custom = ""
        if not settings.SETTINGS.server_mode:
            custom = st.text_input("…or a hub id / local folder", max_chars=300,
                                   value=default2 if default2 and default2 not in choices else "")
        st.form_submit_button("Compare")
    model2 = custom.strip() or (picked if picked != state.CUSTOM else "")
    if not model2:
        return
    state.set_url("model2", model2)
    result2 = compute.result_for(result.text, pair=result.pair or "", target=result.target or "", model=model2)
    if result2 is None:
        return
    kind2 = kind if kind in result2.kinds else result2.kinds[0]
    frame2 = compute.head_metrics(result2, result2.block(kind2))
    for col, (res, frm, n) in zip(st.columns(2), ((result, frame, 1), (result2, frame2, 2))):
        with col:
            _grid(frm, metric, key=f"cmp_m{n}_grid", name=f"{metric}_grid_model{n}", clickable=False,
                  title=models.display_name(res.model.name))
    st.caption("Same text, same metric; the two models may have different numbers of layers "
               "and heads, and split the text into different tokens.")
    summary = {"model": [models.display_name(result.model.name), models.display_name(result2.model.name)]}
    for m in stats.METRICS:
        summary[f"mean {m}"] = [frame[m].mean(), frame2[m].mean()]
    st.dataframe(summary, hide_index=True)


def side_by_side_tab(result: AttentionResult, kind: str, block: Block, metric: str) -> None:
    frame = compute.head_metrics(result, block)
    mode = pick("compare", st.segmented_control, "Compare", list(COMPARE_MODES))
    if mode == "Two heads":
        _two_heads(block, frame)
    elif mode == "Two sentences":
        _two_sentences(result, kind, block, frame, metric)
    else:
        _two_models(result, kind, frame, metric)


def detectors_tab(result: AttentionResult, kind: str, block: Block, metric: str) -> None:
    det = compute.detector_scores(result, kind, block)
    if det is None:
        return
    if det.probe:
        with st.expander("The test input: a random word sequence shown twice"):
            st.text(det.probe.strip())
    table = det.scores
    names = [n for n in stats.DETECTORS if n in table.columns]
    for col, name in zip(st.columns(len(names)), names):
        with col:
            st.markdown(f"**{name.replace('_', '-')} score**")
            _grid(table, name, key=f"cmp_det_{name}", name=f"{name}_detector_{kind}", clickable=False, zmin=0, zmax=1)
            st.caption(stats.DETECTOR_EXPLANATIONS[name])
            top = table.sort_values(name, ascending=False).head(3)
            st.caption("Strongest: " + ", ".join(
                f"L{int(r.layer)} H{int(r.head)} ({getattr(r, name):.2f})" for r in top.itertuples()))
    st.dataframe(table.round(4), hide_index=True)
    explain_box(
        "Detectors look for heads with a known job. In a decoder: **previous-token** heads look one "
        "token back, **duplicate-token** heads look at earlier copies of the same token, and "
        "**induction** heads look at the token that *followed* the earlier copy, which lets the "
        "model continue a repeated pattern (Olsson et al. 2022). They are measured on a random "
        "sequence of words repeated twice, where only an induction head can predict the second half. "
        "**Sink** heads put most of their weight on the first token whatever it is (Xiao et al. 2023). "
        "In an encoder: **positional** heads mostly look at a fixed neighbour, and **special** heads "
        "park their attention on [CLS]/[SEP] (Voita et al. 2019; Clark et al. 2019). "
        "Scores run from 0 to 1.", title="About the detectors")


def _chosen_corpus(cap: int):
    source = st.radio("Corpus", ("Built-in sample corpus", "Upload texts", "Upload finished statistics (CSV)"),
                      key="cmp_corpus_source", horizontal=True,
                      help="Finished statistics: the CSV of `python -m viz stats --corpus FILE --out stats.csv`, "
                           "computed offline for a corpus of any size.")
    try:
        if source.startswith("Built-in"):
            chosen = corpus.sample_corpus(max_texts=cap)
            st.caption(f"{chosen.total} varied English sentences shipped with the app.")
            return chosen
        if source.startswith("Upload finished"):
            upload = st.file_uploader("A stats CSV (one row per layer and head)", type=["csv"], key="cmp_stats_file")
            if upload is not None:
                return corpus.read_stats_csv(upload.getvalue(), name=upload.name)
            return None
        upload = st.file_uploader("One text a line (.txt), or a table (.csv, .jsonl, .parquet)",
                                  type=[s.lstrip(".") for s in corpus.SUFFIXES], key="cmp_corpus_file")
        if upload is None:
            return None
        raw = upload.getvalue()
        column = None
        if not upload.name.lower().endswith(".txt"):
            column = st.selectbox("Column holding the texts", corpus.csv_columns(raw, name=upload.name),
                                  key="cmp_corpus_col")
        return corpus.read_corpus(raw, name=upload.name, column=column, max_texts=cap)
    except corpus.CorpusError as exc:
        st.error(str(exc))
    return None


def _corpus_table(table, metric: str, *, title: str) -> None:
    _grid(table, metric, key="cmp_corpus_grid", name=f"corpus_{metric}_grid", clickable=False, title=title)
    st.dataframe(table.round(4), hide_index=True)
    st.download_button("Download corpus metrics (CSV)", table.to_csv(index=False),
                       file_name="corpus_head_metrics.csv", mime="text/csv", key="cmp_corpus_csv")


def corpus_tab(result: AttentionResult, kind: str, block: Block, metric: str) -> None:
    cap = settings.SETTINGS.upload_max_lines
    chosen = _chosen_corpus(cap)
    if isinstance(chosen, pd.DataFrame):      # statistics computed offline
        n = int(chosen["n_texts"].iloc[0]) if "n_texts" in chosen and len(chosen) else 0
        st.success(f"Mean metrics over {n:,} texts, computed offline.")
        _corpus_table(chosen, metric, title=f"mean {metric} over the corpus")
    elif chosen is not None:
        if chosen.message:
            st.warning(chosen.message)
        key = (chosen.source, chosen.texts[:3], len(chosen.texts), result.model.name, kind)
        run = st.session_state.get("cmp_corpus_job")
        c1, c2 = st.columns([1, 1])
        if c1.button(f"Analyse {len(chosen.texts)} texts", type="primary", key="cmp_corpus_start"):
            if run is None or run.key != key:
                run = compute.CorpusRun(key=key, texts=tuple(chosen.texts))
            run.stopped = False
            st.session_state.cmp_corpus_job = run
        if c2.button("Stop", key="cmp_corpus_stop") and run is not None:
            run.stopped = True
        if run is not None and run.key == key:
            _run_corpus(run, kind, metric)
    explain_box(
        "Corpus mode runs every text through the current model, in padded batches of similar length, and "
        "averages each head's metrics over the texts (each text counts the same; padding is never counted). "
        "Press **Stop** at any time: the means so far are kept, and **Analyse** goes on from there. "
        f"At most {cap} texts are uploaded here; for more, run `python -m viz stats --corpus FILE --out "
        "stats.csv` (optionally on Ray) and upload the finished CSV.", title="About corpus mode")


def _run_corpus(run, kind: str, metric: str) -> None:
    total = len(run.texts)
    bar = st.progress(run.done / total, text=f"{run.done} / {total} texts")
    if not run.stopped and run.done < total:
        try:
            compute.run_corpus(run, kind, progress=lambda line, fraction: bar.progress(min(1.0, fraction),
                                                                                       text=line))
        except corpus.CorpusError as exc:
            st.error(str(exc))
    if not run.acc.n_texts:
        return
    if run.stopped and run.done < total:
        st.info(f"Stopped after {run.done} of {total} texts; the means below use those.")
    else:
        st.success(f"Mean metrics over {run.acc.n_texts} texts.")
    for message in run.acc.failed[:5]:
        st.caption(f"Skipped {message}")
    _corpus_table(run.acc.table(), metric, title=f"mean {metric} over the corpus")
