"""Long inputs on the pages other than the heatmap (issue 16, item 3): what each page computes from a long
result, checked against the same computation on the model's own full attention.

The fixtures of tests/test_long.py: a tiny Llama with 4,096 positions captured at ~1,500 tokens twice,
the long way (a LazyPattern recomputed from q and k, with its streamed summary) and the ordinary way
(the stacked weights transformers' eager attention returned with output_attentions).
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from test_long import long_llama, long_mode, long_text, pair  # noqa: F401 - fixtures shared with test_long

from viz import aggregate, efficient, flow, mathsteps, stats
from viz.figures.overview import (
    MAX_PLOT_SIDE,
    attention_figure,
    difference_blocks_figure,
    pool_blocks,
)
from viz.views import head_view
from viz.views.model_view import downsample


# ---------------------------------------------------------------- compare heads: similarity and two heads
def test_nearest_heads_of_a_long_result_match_the_full_pattern(pair):
    lazy, full = pair
    for layer, head in ((0, 0), (2, 3)):
        ours = stats.distances_from(lazy.block(), layer, head, max_rows=96)
        ref = stats.head_distances(full.decoder_attentions, max_rows=96)[layer * 4 + head]
        assert np.abs(ours - ref).max() < 1e-5
        assert ours[layer * 4 + head] == 0.0


def test_js_distance_rows_matches_scipy_even_for_nearly_equal_rows():
    rng = np.random.default_rng(3)
    p = rng.dirichlet(np.full(200, 0.1), size=(6, 20))
    q = rng.dirichlet(np.full(200, 0.1), size=(6, 20))
    q[0] = p[0] * (1 + 1e-4 * rng.random(p[0].shape))       # nearly the same rows: no cancellation
    p[1, :, 50:] = 0
    q[1, :, 80:] = 0                                          # causal rows: zeros on both sides
    ref = jensenshannon(p, q, base=2, axis=-1)
    assert np.abs(stats.js_distance_rows(p, q) - ref).max() < 1e-6


def test_similarity_map_of_a_long_result_is_drawn_from_its_thumbnails(pair):
    lazy, full = pair
    sim = stats.similarity_map(lazy.block(), seed=0, max_rows=96)
    assert sim.basis == "thumbnails" and sim.coords.shape == (12, 2)
    # independently: scipy's Jensen-Shannon distance on the block masses of the full pattern's thumbnails
    n = full.decoder_attentions.shape[-1]
    thumbs = downsample(full.decoder_attentions).astype(np.float64)       # (L, H, 64, 64) block means
    widths = np.diff(np.append(np.floor(np.arange(64) * n / 64).astype(int), n))
    masses = (thumbs * widths).reshape(12, 64, 64)
    for a in (0, 5, 11):
        ref = np.nanmean(jensenshannon(masses[a][None], masses, base=2, axis=-1), axis=-1)
        ref[a] = 0.0
        assert np.abs(sim.distances[a] - ref).max() < 2e-3     # float32 H(m) - H(p)/2 - H(q)/2 (the docstring)
    short = stats.similarity_map(full.block(), seed=0, max_rows=96)
    assert short.basis == "rows"


def test_head_difference_of_a_long_result(pair):
    lazy, full = pair
    ours = stats.head_difference(lazy.block(), (0, 1), (2, 3))
    ref = full.decoder_attentions[0, 1].astype(np.float64) - full.decoder_attentions[2, 3]
    assert ours.shape == ref.shape and np.abs(ours - ref).max() < 1e-5


# ---------------------------------------------------------------- figures of long matrices
def test_long_matrices_are_drawn_as_blocks_of_their_largest_weight(pair):
    lazy, full = pair
    head = np.array(full.decoder_attentions[1, 2], dtype=np.float32)
    labels = list(full.decoder.labels)
    n = len(labels)
    fig = attention_figure(lazy.block().pattern[1, 2], labels, labels, causal=True, title="t")
    z = np.asarray(fig.data[0].z, dtype=np.float32)
    size = -(-n // MAX_PLOT_SIDE)
    assert z.shape == (-(-n // size),) * 2 and max(z.shape) <= MAX_PLOT_SIDE
    for a, b in ((0, 0), (7, 3), (z.shape[0] - 1, z.shape[1] - 1), (5, 5)):
        cells = head[a * size:(a + 1) * size, b * size:(b + 1) * size].copy()
        rows = np.arange(a * size, min(n, (a + 1) * size))[:, None]
        cols = np.arange(b * size, min(n, (b + 1) * size))[None, :]
        allowed = cols <= rows
        if allowed.any():
            assert abs(z[a, b] - cells[allowed].max()) < 1e-6
        else:
            assert np.isnan(z[a, b])                              # the masked future stays a gap
    assert "largest weight" in fig.data[0].hovertemplate and "blocks of" in fig.layout.title.text
    assert len(fig.to_json()) < 2_000_000                         # 22 MB drawn cell by cell


def test_short_matrices_are_drawn_as_before():
    from viz.figures.attention import heatmap_figure
    from viz.figures.stats import difference_figure
    rng = np.random.default_rng(0)
    m = rng.random((30, 30)).astype(np.float32)
    labels = [f"t{i}" for i in range(30)]
    assert attention_figure(m, labels, labels, causal=True, title="x").to_json() == \
        heatmap_figure(m, labels, labels, causal=True, title="x").to_json()
    assert difference_blocks_figure(m - 0.5, labels, labels).to_json() == difference_figure(m - 0.5, labels,
                                                                                             labels).to_json()


def test_signed_blocks_keep_the_difference_of_largest_magnitude():
    z = np.array([[0.1, -0.5, 0.2], [0.3, 0.0, -0.1], [np.nan, np.nan, 0.4]], dtype=np.float32)
    blocks = pool_blocks(z, max_side=2, signed=True)
    np.testing.assert_allclose(blocks.z, [[-0.5, 0.2], [np.nan, 0.4]])
    assert pool_blocks(z, max_side=2).z[0, 0] == np.float32(0.3)


# ---------------------------------------------------------------- head view
@pytest.mark.parametrize("options", [dict(), dict(top_mass=0.9), dict(top_mass=0.5, max_edges=20_000),
                                     dict(min_weight=0.05, top_mass=0.99)])
def test_head_view_prunes_a_long_layer_to_the_same_edges(pair, monkeypatch, options):
    lazy, full = pair
    layer = np.asarray(full.decoder_attentions[1])
    monkeypatch.setattr(head_view, "SPARSE_PRUNE_CELLS", 1 << 40)
    dense = head_view.prune_edges(layer, **options)
    monkeypatch.setattr(head_view, "SPARSE_PRUNE_CELLS", 0)
    sparse = head_view.prune_edges(lazy.decoder_attentions[1], **options)
    assert len(dense) > 1000
    for name in ("head", "query_pos", "key_pos", "weight"):
        assert np.array_equal(getattr(dense, name), getattr(sparse, name)), name
    assert abs(dense.kept_mass - sparse.kept_mass) < 1e-6


def test_head_view_of_a_long_layer_says_what_it_sent(pair):
    lazy, _ = pair
    view = head_view.build_head_view(lazy.block(), layers=2, max_edges=5_000)
    assert view.n_edges == 5_000 and view.n_possible == 4 * len(lazy.decoder) ** 2
    assert 0 < view.kept_mass < 1 and len(view.html) < 1_000_000


# ---------------------------------------------------------------- word level, hidden tokens
@pytest.mark.parametrize("options", [dict(word_level=True), dict(hide_first=True),
                                     dict(word_level=True, hide_first=True, hide_special=True)])
def test_view_options_on_a_long_result_match_the_full_pattern(pair, long_mode, options):
    lazy, full = pair
    moved = aggregate.transform_block(lazy.block(), **options)
    ref = aggregate.transform_block(full.block(), **options)         # float64, the whole array at once
    assert moved.queries.labels == ref.queries.labels and moved.pattern.shape == ref.pattern.shape
    for layer in (0, 2):
        assert np.abs(moved.pattern[layer] - ref.pattern[layer]).max() < 1e-5
    np.testing.assert_allclose(moved.pattern[1].sum(-1), 1.0, atol=1e-5)


def test_metrics_under_the_view_options_stream_over_layers(pair, long_mode):
    lazy, full = pair
    moved = aggregate.transform_block(lazy.block(), hide_first=True)
    ref = aggregate.transform_block(full.block(), hide_first=True)
    ours, theirs = stats.metric_values(moved), stats.metric_values(ref)
    for name in stats.METRICS:
        bound = 1e-3 if name == "mean_distance" else 1e-4
        assert np.nanmax(np.abs(ours[name] - theirs[name])) < bound, name


@pytest.mark.parametrize("options", [dict(hide_first=True), dict(word_level=True, hide_special=True)])
def test_metrics_under_the_view_options_estimated_from_rows(pair, options):
    lazy, full = pair
    ref = stats.metric_values(aggregate.transform_block(full.block(), **options))   # every row, float64
    values, stderr, n_rows = stats.estimated_metrics(lazy.block(), max_rows=100_000, **options)
    assert n_rows == aggregate.transform_block(full.block(), **options).pattern.shape[2]
    for name in stats.METRICS:                                 # all rows sampled: the metrics themselves
        bound = 1e-3 if name == "mean_distance" else 1e-4
        assert np.nanmax(np.abs(values[name] - ref[name])) < bound, name
    frame = stats.estimated_head_metrics(lazy.block(), max_rows=64, **options)
    assert frame.attrs["sampled_rows"] == 64 and len(frame) == 12
    for name in stats.METRICS:                                 # 64 rows: within a few standard errors
        grid = stats.metric_grid(frame, name)
        assert np.nanmax(np.abs(grid - ref[name])) <= 5 * frame.attrs["stderr"][name] + 1e-6, name


# ---------------------------------------------------------------- attention flow
def test_norm_based_layer_in_chunks_equals_the_einsum(monkeypatch):
    rng = np.random.default_rng(2)
    pattern = rng.dirichlet(np.ones(300), size=(4, 300)).astype(np.float32)
    value_out = rng.normal(size=(4, 300, 16)).astype(np.float32)
    whole = flow.norm_based_layer(pattern, value_out)
    monkeypatch.setattr(flow, "NORM_CHUNKED_CELLS", 0)
    chunked = flow.norm_based_layer(pattern, value_out)
    # independently: || sum_h alpha_h f_h(x_j) || written out
    ref = np.linalg.norm(np.einsum("hqk,hkd->qkd", pattern.astype(np.float64), value_out.astype(np.float64)),
                         axis=-1)
    assert np.abs(chunked - ref).max() < 1e-5 * ref.max()
    assert np.abs(chunked - whole).max() < 1e-6 * ref.max()


# ---------------------------------------------------------------- efficient attention
def test_efficient_summary_of_a_long_result_is_an_honest_estimate(pair):
    lazy, full = pair
    block = full.block()
    config = efficient.pattern_config({k.name: k.default for k in efficient.KNOBS} | {"globals": "special"},
                                      queries=block.queries, keys=block.keys)
    est = efficient.head_summary(lazy.decoder_attentions, config=config, causal=True, max_rows=64)
    exact = efficient.head_summary(full.decoder_attentions, config=config, causal=True)
    assert est.sampled_rows == 64 and exact.sampled_rows == 0 and 0 < est.stderr < 0.2
    # the same estimator computed independently on the full pattern's rows
    n = full.decoder_attentions.shape[-1]
    rows = np.unique(np.linspace(0, n - 1, 64).round().astype(int))
    a = full.decoder_attentions[:, :, rows].astype(np.float64)                  # (L, H, R, T)
    local = (np.abs(np.arange(n)[None, :] - rows[:, None]) <= config.window)
    per_row = (a * local).sum(-1)
    np.testing.assert_allclose(est.local, per_row.mean(-1), atol=1e-5)
    se = per_row.std(-1, ddof=1) / np.sqrt(len(rows))
    assert est.stderr >= se.max() - 1e-6
    # and the estimate is where its standard error says it is
    assert np.abs(est.local - exact.local).max() < 5 * est.stderr + 1e-3
    assert np.abs(est.kept - exact.kept).max() < 5 * est.stderr + 1e-3


def test_efficient_lab_on_the_first_tokens_of_a_long_causal_text(long_llama, pair):
    from viz.capture import capture_layer
    from viz.models import load_model
    lazy, full = pair
    li = capture_layer(lazy.text, site=("decoder", 1), model=load_model(long_llama))
    cut = efficient.causal_prefix(li, 200)
    assert cut.query.shape[1] == 200 and cut.scores.shape[1:] == (200, 200)
    # the first 200 tokens' attention is what the full pattern holds for them
    assert np.abs(cut.pattern - full.decoder_attentions[1][:, :200, :200]).max() < 1e-5
    np.testing.assert_allclose(cut.pattern.sum(-1), 1.0, atol=1e-5)
    block = full.block()
    config = efficient.pattern_config({k.name: k.default for k in efficient.KNOBS} | {"globals": "special"},
                                      queries=block.queries, keys=block.keys)
    approx = efficient.approximate_head(efficient.HeadInput.from_internals(cut, 2), config=config)
    assert np.abs(approx[0].pattern - full.decoder_attentions[1, 2, :200, :200]).max() < 1e-5
    assert efficient.causal_prefix(li, 10_000) is li


# ---------------------------------------------------------------- attention math
def test_math_strips_show_the_query_neighbourhood():
    assert np.array_equal(mathsteps.strip_rows(40, 5), np.arange(40))
    rows = mathsteps.strip_rows(2048, 1000)
    assert len(rows) == mathsteps.STRIP_ROWS and rows[0] <= 1000 <= rows[-1]
    assert mathsteps.strip_rows(2048, 2047)[-1] == 2047 and mathsteps.strip_rows(2048, 0)[0] == 0


# ---------------------------------------------------------------- every page of mine, long input, with options
PAGE_RUNS = [
    ("pages/home.py", {}),
    ("pages/head_view.py", {"words": "1"}),
    ("pages/head_view.py", {"nofirst": "1", "mass": "90%", "head": "1"}),
    ("pages/model_view.py", {"nofirst": "1"}),
    ("pages/model_view.py", {"head": "2", "layer": "1"}),
    ("pages/compare_heads.py", {}),
    ("pages/compare_heads.py", {"cmp_tab": "Similarity map", "layer": "1", "head": "3"}),
    ("pages/compare_heads.py", {"cmp_tab": "Side by side", "a": "0.1", "b": "2.3"}),
    ("pages/compare_heads.py", {"cmp_tab": "Detectors"}),
    ("pages/compare_heads.py", {"nofirst": "1"}),
    ("pages/attention_flow.py", {"words": "1"}),
    ("pages/efficient_attention.py", {"layer": "1"}),
    ("pages/attention_math.py", {"layer": "2", "query": "900"}),
    ("pages/ablation.py", {"ablate": "0:1"}),
    ("pages/model_view.py", {"ablate": "0:1"}),
    ("pages/gallery.py", {}),
]


@pytest.mark.parametrize("page,params", PAGE_RUNS, ids=[f"{p.split('/')[1][:-3]}-{'-'.join(q) or 'plain'}"
                                                        for p, q in PAGE_RUNS])
def test_my_pages_run_on_a_long_input(app_test, long_llama, long_mode, page, params):
    at = app_test(page, model=long_llama, text=long_text(), **params)
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    shown = " ".join(c.value for c in at.caption) + " ".join(m.value for m in at.markdown)
    if page == "pages/compare_heads.py" and params.get("cmp_tab") == "Similarity map":
        assert "block means" in shown
    if page == "pages/compare_heads.py" and params.get("nofirst"):
        assert "estimated from" in shown
    if page == "pages/efficient_attention.py":
        assert "first 512" in shown and "evenly spaced" in shown
    if page == "pages/head_view.py":
        assert "left out are the faintest" in shown
    if page == "pages/attention_math.py":
        assert "of 1," in shown or "are shown" in shown
