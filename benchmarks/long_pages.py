"""Each page's own server work on a long input (issue 16, item 3): seconds and bytes after the capture.

    .venv/bin/python benchmarks/long_pages.py [--tokens 2048] [--pages home head_view ...]
                                               [--save /tmp/long.npz | --load /tmp/long.npz]

One function per page (home, head view, model view, compare heads' tabs, attention flow, efficient
attention, attention math, ablation, gallery, plus the word-level / hide-first options) repeats what
the page asks of ``viz/`` (the functions it reaches through viz/ui/compute.py and the figure/view
builders) without Streamlit, and counts the bytes it would send: plotly figure JSON, view HTML,
dataframes as Arrow IPC (what st.dataframe sends). The capture itself is not counted (see
benchmarks/long.py); runs of the model a page starts itself (one layer's internals, a short probe
text, an ablated capture) are timed separately as ``model s``.

``measure_pages(loaded, result) -> list[dict]`` is what benchmarks/long.py calls. ``--save``/``--load``
keep a long capture between runs (its per-layer queries and keys and the streamed summary). The
machine is shared: the load average is printed with the table.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from common import rss_mb  # noqa: E402


# ---------------------------------------------------------------- measuring one page
class Meter:
    """Adds up server seconds (page work), model seconds (model runs the page starts) and bytes sent."""

    def __init__(self):
        self.seconds = 0.0
        self.model_seconds = 0.0
        self.bytes = 0
        self.notes: list[str] = []

    def run(self, fn, *args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        self.seconds += time.perf_counter() - start
        return out

    def model(self, fn, *args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        self.model_seconds += time.perf_counter() - start
        return out

    def figure(self, fig):
        """Count a plotly figure as st.plotly_chart sends it (its JSON, serialised on the server)."""
        self.bytes += len(self.run(fig.to_json))
        return fig

    def html(self, text: str):
        self.bytes += len(text.encode())
        return text

    def frame(self, frame):
        """Count a DataFrame as st.dataframe sends it (Arrow IPC)."""
        import pyarrow as pa

        def arrow() -> int:
            table = pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
            return sink.getvalue().size
        self.bytes += self.run(arrow)
        return frame


def _labels(seq):
    return list(seq.labels)


def _internals(loaded, result, kind: str, layer: int, m: Meter):
    from viz.capture import capture_layer
    return m.model(capture_layer, result.text, site=(kind, layer), model=loaded)


# ---------------------------------------------------------------- one function per page (defaults: layer 0)
def page_home(loaded, result, m: Meter, *, flags=(False, False, False)) -> None:
    from viz import stats
    from viz.views import heatmap as heatmap_view
    block = result.block()
    frame = m.run(_head_metrics, result, block, flags)
    pick = m.run(stats.interesting_head, frame)
    row = m.run(lambda: block.pattern[pick.layer, pick.head])
    view = m.run(heatmap_view.build_heatmap, row, _labels(block.queries), _labels(block.keys), causal=block.causal,
                 title=f"layer {pick.layer}", file_name="first_head")
    m.html(view.fragment)
    import pandas as pd
    seq = result.tokens
    m.frame(m.run(lambda: pd.DataFrame({"position": range(len(seq)), "token": list(seq.tokens),
                                        "shown as": list(seq.labels), "special": seq.special,
                                        "word": seq.word_ids, "segment": seq.segment_ids})))


def _view_block(result, flags):
    from viz import aggregate
    words, hide, first = flags
    block = result.block()
    if words or hide or first:
        block = aggregate.transform_block(block, word_level=words, hide_special=hide, hide_first=first)
    return block


def _head_metrics(result, block, flags):
    """viz.ui.compute.head_metrics: a long result under the view options is estimated from sampled rows."""
    from viz import stats
    if getattr(block.pattern, "summary", True) is None:
        words, hide, first = flags
        return stats.estimated_head_metrics(result.block(), word_level=words, hide_special=hide, hide_first=first)
    return stats.head_metrics(block)


def page_head_view(loaded, result, m: Meter, *, flags=(False, False, False), layer=0, head=None,
                   top_mass=None) -> None:
    from viz.views import head_view
    block = m.run(_view_block, result, flags)
    view = m.run(head_view.build_head_view, block, layers=layer, heads=None if head is None else [head],
                 top_mass=top_mass, title=f"layer {layer}")
    m.html(view.html)
    m.notes.append(f"{view.n_edges:,} of {view.n_possible:,} edges sent")


def page_model_view(loaded, result, m: Meter, *, flags=(False, False, False), layer=0, head=None) -> None:
    from viz.figures.model_view import model_view_figure
    from viz.figures.overview import attention_figure
    from viz.result import is_lazy
    raw = result.block()
    block = m.run(_view_block, result, flags)
    mosaic_block = raw if block is not raw and is_lazy(raw.pattern) else block
    m.figure(m.run(model_view_figure, mosaic_block, normalize="head", gamma=0.5,
                   selected=None if head is None else (layer, head)))
    pattern = m.run(lambda: block.pattern[layer].mean(axis=0) if head is None else block.pattern[layer, head])
    m.figure(m.run(attention_figure, pattern, block.queries.labels, block.keys.labels, causal=block.causal,
                   title=f"layer {layer}"))


def page_compare_metrics(loaded, result, m: Meter, *, flags=(False, False, False), layer=0, head=0) -> None:
    from viz import stats
    from viz.figures import stats as sf
    from viz.figures.overview import attention_figure
    block = m.run(_view_block, result, flags)
    frame = m.run(_head_metrics, result, block, flags)
    m.figure(m.run(attention_figure, block.pattern[layer, head], block.queries.labels, block.keys.labels,
                   causal=block.causal, title="head"))
    m.figure(m.run(sf.metric_grid_figure, stats.metric_grid(frame, "entropy"), metric="entropy",
                   selected=(layer, head), kv_head=block.kv_head))
    m.frame(m.run(frame.round, 4))
    m.bytes += len(m.run(frame.to_csv, index=False))
    for name in stats.METRICS:
        m.figure(m.run(sf.metric_grid_figure, stats.metric_grid(frame, name), metric=name, clickable=False,
                       height=230))


SIMILARITY_ROWS = 96   # viz.ui.compute.SIMILARITY_ROWS (not imported: it would import streamlit)


def page_compare_similarity(loaded, result, m: Meter, *, flags=(False, False, False), layer=0, head=0) -> None:
    from viz import stats
    from viz.figures import stats as sf
    block = m.run(_view_block, result, flags)
    frame = m.run(_head_metrics, result, block, flags)
    sim = m.run(stats.similarity_map, result.block(), seed=0, max_rows=SIMILARITY_ROWS)
    row = m.run(stats.distances_from, result.block(), layer, head, max_rows=SIMILARITY_ROWS) \
        if sim.basis == "thumbnails" else None
    nearest = m.run(stats.nearest_heads, sim, layer, head, k=5, row=row)
    m.notes.append(f"map from {sim.basis}")
    m.figure(m.run(sf.similarity_figure, sim.frame(), labels=stats.top_metric(frame), selected=(layer, head),
                   nearest=nearest))
    m.frame(nearest.round(4))


def page_compare_two_heads(loaded, result, m: Meter, *, flags=(False, False, False), a=(0, 0), b=(0, 1)) -> None:
    from viz import stats
    from viz.figures.overview import attention_figure, difference_blocks_figure
    block = m.run(_view_block, result, flags)
    frame = m.run(_head_metrics, result, block, flags)
    for (lay, hd) in (a, b):
        m.figure(m.run(attention_figure, block.pattern[lay, hd], block.queries.labels, block.keys.labels,
                       causal=block.causal, title="head"))
    diff = m.run(stats.head_difference, block, a, b)
    m.figure(m.run(difference_blocks_figure, diff, block.queries.labels, block.keys.labels, causal=block.causal,
                   title="A - B"))
    m.frame(m.run(lambda: frame.set_index(["layer", "head"]).loc[[a, b]].round(4)))


def page_compare_detectors(loaded, result, m: Meter, *, flags=(False, False, False)) -> None:
    from viz import corpus, stats
    from viz.capture import capture
    from viz.figures import stats as sf
    block = m.run(_view_block, result, flags)
    if block.causal:
        probe = m.run(stats.repeated_random_text, loaded.tokenizer.get_vocab(), seed=0, pool=corpus.word_pool(),
                      max_tokens=loaded.info.max_length)
        probe_result = m.model(capture, probe, model=loaded)
        table = m.run(stats.detect_heads, probe_result.block())
    else:
        table = m.run(stats.detect_heads, block)
    for name in [n for n in stats.DETECTORS if n in table.columns]:
        m.figure(m.run(sf.metric_grid_figure, stats.metric_grid(table, name), metric=name, clickable=False,
                       zmin=0, zmax=1))
    m.frame(m.run(table.round, 4))


def page_attention_flow(loaded, result, m: Meter, *, flags=(False, False, False), layer=0, head=None) -> None:
    from viz import aggregate, flow
    from viz.figures.flow import relevance_figure
    from viz.figures.overview import attention_figure as heatmap_figure
    words, hide, _ = flags
    raw_block = result.block()
    block = m.run(aggregate.transform_block, raw_block, word_level=words, hide_special=hide)
    internals = _internals(loaded, result, raw_block.kind, layer, m)

    def flow_of(head_mean, lay):
        return flow.attention_flow(head_mean, layer=lay)
    readings = m.run(flow.layer_readings, block, raw_block, layer=layer, head=head, internals=internals,
                     flow_of=flow_of, word_level=words, hide_special=hide)
    for name, matrix in readings.matrices.items():
        m.figure(m.run(heatmap_figure, matrix, block.queries.labels, block.keys.labels, causal=block.causal,
                       title=name))
    pos = flow.default_output_position(block.queries, causal=block.causal)
    m.figure(m.run(relevance_figure, {name: matrix[pos] for name, matrix in readings.matrices.items()},
                   block.keys.labels, title="relevance"))
    if readings.rollout is not None:
        m.figure(m.run(heatmap_figure, readings.rollout[:, pos, :], [f"after layer {i}" for i in
                                                                       range(block.n_layers)],
                       block.keys.labels, title="rollout", query_axis="layer", key_axis="input token"))


def page_efficient(loaded, result, m: Meter, *, layer=0, head=0) -> None:
    from viz import efficient as ef
    from viz.figures import efficient as eff
    block = result.block()
    knobs = {knob.name: knob.default for knob in ef.KNOBS}
    knobs.update(globals="special", colour="sqrt")
    config = m.run(ef.pattern_config, knobs, queries=block.queries, keys=block.keys)
    full_internals = _internals(loaded, result, block.kind, layer, m)
    internals = m.run(ef.causal_prefix, full_internals, ef.LAB_MAX_TOKENS)
    n = internals.query.shape[1]
    q_labels, k_labels = block.queries.labels[:n], block.keys.labels[:internals.key.shape[1]]
    approximations = m.run(ef.approximate_head, ef.HeadInput.from_internals(internals, head), config=config)
    m.frame(m.run(eff.metrics_frame, approximations))
    m.figure(m.run(eff.pattern_grid_figure, approximations, q_labels, k_labels, gamma=0.5))
    m.figure(m.run(eff.pattern_grid_figure, approximations, q_labels, k_labels, show="mask"))
    m.figure(m.run(eff.detail_figure, approximations[0].pattern, approximations[1], q_labels,
                   k_labels, max_cells=256, gamma=0.5))
    lm = m.run(ef.layer_metrics, internals, config=config)
    m.frame(m.run(eff.layer_metrics_frame, lm))
    summary = m.run(ef.head_summary, block.pattern, config=config, causal=block.causal, max_rows=ef.SUMMARY_ROWS)
    if summary.sampled_rows:
        m.notes.append(f"summary from {summary.sampled_rows} rows, stderr {summary.stderr:.3f}")
    m.figure(m.run(eff.head_summary_figure, summary))
    m.frame(m.run(eff.role_counts, summary))
    m.frame(m.run(lambda: eff.kept_by_layer_frame(summary).mul(100).round(1)))
    costs = m.run(ef.cost_model, config=config, d_head=int(internals.query.shape[-1]), causal=block.causal)
    m.figure(m.run(eff.cost_figure, costs, mark_length=block.pattern.shape[-1]))


def page_attention_math(loaded, result, m: Meter, *, layer=0, head=0) -> None:
    import pandas as pd

    from viz import mathsteps
    from viz.figures.math import key_bars_figure, vector_strip_figure
    block = result.block()
    q_labels, k_labels = block.queries.labels, block.keys.labels
    query_pos = mathsteps.default_query(block.queries.special)
    li = _internals(loaded, result, block.kind, layer, m)
    steps = m.run(mathsteps.math_steps, li, head=head, query_pos=query_pos)
    q_rows = mathsteps.strip_rows(len(q_labels), query_pos)
    k_rows = mathsteps.strip_rows(len(k_labels), query_pos)
    if li.hidden is not None:
        m.figure(m.run(vector_strip_figure, li.hidden[q_rows], [q_labels[i] for i in q_rows],
                       highlight=query_pos - int(q_rows[0]), value_name="x"))
    m.figure(m.run(vector_strip_figure, steps.q[None, :], [q_labels[query_pos]], value_name="q"))
    m.figure(m.run(vector_strip_figure, steps.keys[k_rows], [k_labels[i] for i in k_rows], value_name="k"))
    m.figure(m.run(vector_strip_figure, steps.values[k_rows], [k_labels[i] for i in k_rows], value_name="v"))
    table = {"key_pos": np.arange(len(k_labels)), "key token": list(k_labels), "q·k": steps.dots,
             "scaled": steps.scaled, "score s_j": steps.scores, "allowed": steps.allowed,
             "softmax (ours)": steps.weights, "model's weight": steps.model_weights}
    m.frame(m.run(pd.DataFrame, table))
    m.figure(m.run(key_bars_figure, steps.masked, k_labels, allowed=steps.allowed, title="scores",
                   value_name="score"))
    m.figure(m.run(key_bars_figure, steps.weights, k_labels, allowed=steps.allowed, title="weights",
                   value_name="weight"))
    m.figure(m.run(vector_strip_figure, np.stack([steps.output, steps.model_output]), ["ours", "model"],
                   value_name="z"))


def page_ablation(loaded, result, m: Meter, *, heads=((0, 0),), mode="zero") -> None:
    """The ablation page's effect view, and one view (the model view) of the ablated run."""
    from viz import ablation
    from viz.figures import ablation as fa
    effect = m.model(ablation.effect, result.text, list(heads), model=loaded, mode=mode)
    labels = effect.tokens.labels
    m.figure(m.run(fa.decoder_effect_figure, labels, effect.p_next_before, effect.p_next_after, effect.kl,
                   title="effect"))
    top = m.run(effect.top_k, len(labels) - 2)
    m.figure(m.run(fa.topk_compare_figure, top.before_labels, top.before_probs, top.before_probs_after, title="b"))
    m.figure(m.run(fa.topk_compare_figure, top.after_labels, top.after_probs_before, top.after_probs, title="a"))
    ablated = m.model(ablation.ablated_capture, result.text, list(heads), model=loaded, mode=mode)
    lazy = not isinstance(ablated.decoder_attentions, np.ndarray)
    m.notes.append(f"ablated run {'kept per layer (lazy)' if lazy else 'held whole'}")
    page_model_view(loaded, ablated, m)


def page_gallery(loaded, result, m: Meter) -> None:
    from viz import gallery
    for preset in gallery.PRESETS:
        m.html(preset.text + (preset.pair or "") + (preset.target or "") + preset.look_for)
        m.run(gallery.relative_link, preset, model="embedded-llm")


WORDS, NOFIRST = (True, False, False), (False, False, True)
PAGES = {
    "home": page_home,
    "head_view": page_head_view,
    "head_view (head 0, 90% mass)": lambda lo, r, m: page_head_view(lo, r, m, head=0, top_mass=0.9),
    "model_view": page_model_view,
    "compare: metrics": page_compare_metrics,
    "compare: similarity": page_compare_similarity,
    "compare: two heads": page_compare_two_heads,
    "compare: detectors": page_compare_detectors,
    "attention_flow": page_attention_flow,
    "efficient_attention": page_efficient,
    "attention_math": page_attention_math,
    "gallery": page_gallery,
    "head_view + word level": lambda lo, r, m: page_head_view(lo, r, m, flags=WORDS),
    "model_view + hide first": lambda lo, r, m: page_model_view(lo, r, m, flags=NOFIRST),
    "compare: metrics + word level": lambda lo, r, m: page_compare_metrics(lo, r, m, flags=WORDS),
    "compare: metrics + hide first": lambda lo, r, m: page_compare_metrics(lo, r, m, flags=NOFIRST),
    "attention_flow + word level": lambda lo, r, m: page_attention_flow(lo, r, m, flags=WORDS),
    "ablation": page_ablation,
}


def measure_pages(loaded, result, *, pages=None) -> list[dict]:
    """Server seconds, model seconds and bytes of each page in :data:`PAGES` (or ``pages``) on ``result``.

    A page that fails reports its error instead of numbers. The layer cache of a long result is cleared
    before each page, so every page pays for the layers it recomputes.
    """
    rows = []
    for name in pages or PAGES:
        cache = getattr(result.block().pattern, "_cache", None)
        if cache is not None:
            cache.clear()
        gc.collect()
        m = Meter()
        before = rss_mb()
        error = ""
        try:
            PAGES[name](loaded, result, m)
        except Exception as exc:  # noqa: BLE001 - a benchmark reports, it does not stop
            error = f"{type(exc).__name__}: {str(exc)[:120]}"
        rows.append(dict(page=name, server_s=round(m.seconds, 2), model_s=round(m.model_seconds, 2),
                         mb=round(m.bytes / 1e6, 2), rss_growth_mb=round(rss_mb() - before),
                         load=round(os.getloadavg()[0], 1), notes="; ".join(m.notes), error=error))
        print(rows[-1], flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| page | server s | model s | MB sent | load avg | notes |", "|---|---|---|---|---|---|"]
    for r in rows:
        notes = r["error"] or r["notes"]
        lines.append(f"| {r['page']} | {r['server_s']:.2f} | {r['model_s']:.2f} | {r['mb']:.2f} | {r['load']} | "
                     f"{notes} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- keeping one long capture between runs
def save_result(result, path: str) -> None:
    """A long result's per-layer queries/keys, summary and tokens as one .npz (for --load)."""
    import json
    pattern = result.decoder_attentions
    arrays = {}
    for i, layer in enumerate(pattern.qk):
        arrays[f"q{i}"], arrays[f"k{i}"] = layer.query, layer.key
    s = pattern.summary
    for name, value in s.metrics.items():
        arrays[f"metric_{name}"] = value
    arrays["thumbs"], arrays["layer_mean"] = s.thumbs, s.layer_mean
    seq = result.decoder
    for f in ("token_ids", "special", "word_ids", "segment_ids"):
        arrays[f"seq_{f}"] = getattr(seq, f)
    meta = dict(info=dataclasses.asdict(result.model), text=result.text, tokens=seq.tokens, labels=seq.labels,
                scaling=[layer.scaling for layer in pattern.qk], thumb=s.thumb, notice=result.notice,
                max_error=float(getattr(pattern, "max_error", float("nan"))))
    np.savez(path, meta=np.array(json.dumps(meta)), **arrays)


def load_result(path: str):
    import json

    from viz.result import (
        AttentionResult,
        LayerQK,
        ModelInfo,
        PatternSummary,
        TokenSeq,
        qk_pattern,
    )
    z = np.load(path)
    meta = json.loads(str(z["meta"]))
    info = ModelInfo(**meta["info"])
    layers = tuple(LayerQK(query=z[f"q{i}"], key=z[f"k{i}"], scaling=s) for i, s in enumerate(meta["scaling"]))
    metrics = {k[len("metric_"):]: z[k] for k in z.files if k.startswith("metric_")}
    summary = PatternSummary(metrics=metrics, thumbs=z["thumbs"], thumb=meta["thumb"], layer_mean=z["layer_mean"])
    pattern = qk_pattern(layers, info.kv_head, causal=True, summary=summary)
    pattern.max_error = meta["max_error"]
    seq = TokenSeq(tokens=tuple(meta["tokens"]), labels=tuple(meta["labels"]), token_ids=z["seq_token_ids"],
                   special=z["seq_special"], word_ids=z["seq_word_ids"], segment_ids=z["seq_segment_ids"])
    return AttentionResult(model=info, text=meta["text"], decoder=seq, decoder_attentions=pattern,
                           notice=meta["notice"])


def long_text(loaded, n_tokens: int) -> str:
    """README.md repeated, cut to ``n_tokens`` tokens."""
    ids = loaded.tokenizer((ROOT / "README.md").read_text() * 8)["input_ids"]
    return loaded.tokenizer.decode(ids[:n_tokens])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--pages", nargs="+", default=None, help=f"any of: {', '.join(PAGES)}")
    parser.add_argument("--save", default=None, help="save the capture here (.npz)")
    parser.add_argument("--load", default=None, help="reuse a capture saved with --save")
    args = parser.parse_args()

    import torch

    from viz.capture import capture
    from viz.models import load_model
    torch.set_num_threads(2)
    loaded = load_model("embedded-llm")
    if args.load:
        result = load_result(args.load)
    else:
        start = time.perf_counter()
        result = capture(long_text(loaded, args.tokens), model=loaded)
        print(f"capture: {time.perf_counter() - start:.1f} s", flush=True)
        if args.save:
            save_result(result, args.save)
    print(f"{len(result.tokens):,} tokens, {result.model.n_layers} x {result.model.n_heads}; "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} (a shared 2-core machine)", flush=True)
    rows = measure_pages(loaded, result, pages=args.pages)
    print()
    print(markdown(rows))
    print(f"\nload average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
