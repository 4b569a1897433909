"""Efficient-attention lab: masks checked by hand, metrics on hand-made matrices, the full pattern
reproducing real models' attention, figure builders, the cost model, the torch micro-benchmark and the page."""
from __future__ import annotations

import numpy as np
import pytest

from viz import efficient as ef
from viz.figures import efficient as eff
from viz.result import LayerInternals

T, F = True, False


def _m(rows):
    return np.array(rows, dtype=bool)


# ---------------------------------------------------------------- masks by hand

def test_window_mask_width_and_causality():
    assert (ef.window_mask(5, 5, 1) == _m([[T, T, F, F, F],
                                           [T, T, T, F, F],
                                           [F, T, T, T, F],
                                           [F, F, T, T, T],
                                           [F, F, F, T, T]])).all()
    assert (ef.window_mask(5, 5, 1, causal=True) == _m([[T, F, F, F, F],
                                                        [T, T, F, F, F],
                                                        [F, T, T, F, F],
                                                        [F, F, T, T, F],
                                                        [F, F, F, T, T]])).all()
    # width w: 2w+1 keys away from the edges
    assert ef.window_mask(20, 20, 3)[10].sum() == 7
    assert ef.window_mask(20, 20, 0).sum() == 20


def test_dilated_mask_skips_neighbours():
    m = ef.dilated_mask(7, 7, 1, 2)
    assert np.flatnonzero(m[3]).tolist() == [1, 3, 5]
    assert np.flatnonzero(m[0]).tolist() == [0, 2]
    assert np.flatnonzero(m[6]).tolist() == [4, 6]
    mc = ef.dilated_mask(7, 7, 2, 3, causal=True)
    assert np.flatnonzero(mc[6]).tolist() == [0, 3, 6]
    assert not (mc & ~np.tril(np.ones((7, 7), bool))).any()


def test_longformer_globals_see_and_are_seen():
    m = ef.longformer_mask(5, 5, 0, global_queries=(0,), global_keys=(0,))
    assert (m == _m([[T, T, T, T, T],
                     [T, T, F, F, F],
                     [T, F, T, F, F],
                     [T, F, F, T, F],
                     [T, F, F, F, T]])).all()
    mc = ef.longformer_mask(5, 5, 0, global_queries=(0, 4), global_keys=(0, 4), causal=True)
    # the global query 0 can only see itself in a decoder; key 4 is visible to nobody but query 4
    assert mc[0].tolist() == [T, F, F, F, F]
    assert mc[:, 4].tolist() == [F, F, F, F, T]
    assert mc[4].all()
    # out-of-range globals are ignored, not an IndexError
    assert (ef.longformer_mask(3, 3, 0, global_queries=(9,), global_keys=(-1, 7)) == np.eye(3, dtype=bool)).all()


def test_bigbird_random_keys_are_seeded_extra_and_causal():
    base = ef.longformer_mask(12, 12, 1, global_queries=(0,), global_keys=(0,))
    a = ef.bigbird_mask(12, 12, 1, 2, global_queries=(0,), global_keys=(0,), seed=3)
    b = ef.bigbird_mask(12, 12, 1, 2, global_queries=(0,), global_keys=(0,), seed=3)
    c = ef.bigbird_mask(12, 12, 1, 2, global_queries=(0,), global_keys=(0,), seed=4)
    assert (a == b).all() and (a != c).any()
    assert (a >= base).all()                                   # superset of the Longformer mask
    extra = (a & ~base).sum(axis=1)
    free = (~base).sum(axis=1)
    assert (extra == np.minimum(2, free)).all()                # exactly n_random new keys where possible
    ac = ef.bigbird_mask(12, 12, 1, 3, global_queries=(0,), global_keys=(0,), seed=3, causal=True)
    assert not (ac & ~np.tril(np.ones((12, 12), bool))).any()
    base_c = ef.longformer_mask(12, 12, 1, global_queries=(0,), global_keys=(0,), causal=True)
    free_c = (np.tril(np.ones((12, 12), bool)) & ~base_c).sum(axis=1)
    assert ((ac & ~base_c).sum(axis=1) == np.minimum(3, free_c)).all()


def test_block_mask_and_cross_centres():
    m = ef.block_mask(6, 6, 2)
    assert (m == np.kron(np.eye(3, dtype=bool), np.ones((2, 2), bool))).all()
    assert (ef.block_mask(6, 6, 4, causal=True)[5] == _m([F, F, F, F, T, T])).all()
    # cross attention: 3 decoder queries over 5 encoder keys are centred at 0, 2, 4
    assert ef.centres(3, 5).tolist() == [0, 2, 4]
    assert (ef.window_mask(3, 5, 0) == _m([[T, F, F, F, F], [F, F, T, F, F], [F, F, F, F, T]])).all()


def test_lsh_buckets_follow_direction_and_seed():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((6, 8))
    # keys: the same directions (scaled) for 0..2, opposite directions for 3..5
    k = np.concatenate([2.5 * q[:3], -q[3:]])
    m = ef.lsh_mask(q, k, n_buckets=4, n_hashes=3, seed=1, include_self=False)
    assert m[[0, 1, 2], [0, 1, 2]].all()              # a vector shares its bucket with itself in every round
    assert not m[[3, 4, 5], [3, 4, 5]].any()          # x and -x land in opposite buckets in every round
    assert (m == ef.lsh_mask(q, k, n_buckets=4, n_hashes=3, seed=1, include_self=False)).all()
    many = [ef.lsh_mask(q, k, n_buckets=4, n_hashes=1, seed=s, include_self=False) for s in range(6)]
    assert any((x != many[0]).any() for x in many[1:])
    # more rounds can only add keys (OR over rounds, same first rotation)
    one = ef.lsh_mask(q, k, n_buckets=4, n_hashes=1, seed=1, include_self=False)
    assert (m >= one).all()
    assert (ef.lsh_mask(q, -q, n_buckets=4, n_hashes=2, seed=0)).diagonal().all()   # include_self
    mc = ef.lsh_mask(q, q, n_buckets=2, n_hashes=2, seed=0, causal=True)
    assert not (mc & ~np.tril(np.ones((6, 6), bool))).any()


# ---------------------------------------------------------------- recomputed attention and metrics

def _head(scores, value, *, allowed=None, query=None, key=None, causal=False, cross=False):
    scores = np.asarray(scores, dtype=np.float64)
    n_q, n_k = scores.shape
    d = np.asarray(value).shape[1]
    return ef.HeadInput(scores=scores, allowed=np.ones((n_q, n_k), bool) if allowed is None else allowed,
                        query=np.ones((n_q, d)) if query is None else query,
                        key=np.ones((n_k, d)) if key is None else key, value=np.asarray(value, float),
                        causal=causal, cross=cross)


def test_masked_softmax_renormalises_and_handles_empty_rows():
    s = np.log(np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]]))
    p, empty = ef.masked_softmax(s, _m([[T, T, F], [F, F, F]]))
    assert np.allclose(p[0], [0.625, 0.375, 0.0])
    assert (p[1] == 0).all() and not np.isnan(p).any()
    assert empty.tolist() == [False, True]


def test_kept_mass_divergence_and_output_error_by_hand():
    # one query, three keys with weights .5 .3 .2; a window of 1 keeps keys 0 and 1
    s = np.log(np.array([[0.5, 0.3, 0.2]]))
    value = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    head = _head(s, value)
    cfg = ef.PatternConfig(window=1)
    (full, win) = ef.approximate_head(head, config=cfg, patterns=(ef.FULL, ef.WINDOW))
    assert full.kept_mass == pytest.approx(1.0) and full.tv == pytest.approx(0, abs=1e-12)
    assert full.output_error == pytest.approx(0, abs=1e-12)
    assert win.mask[0].tolist() == [T, T, F]
    assert np.allclose(win.pattern[0], [0.625, 0.375, 0.0])
    assert win.kept_mass == pytest.approx(0.8)
    assert win.tv == pytest.approx(0.2)                      # = 1 - kept mass for a renormalised subset
    assert win.kl == pytest.approx(-np.log(0.8))
    # outputs [.5,.3] vs [.625,.375]: error |[.125,.075]| / |[.5,.3]| = 0.25
    assert win.output_error == pytest.approx(0.25)
    assert win.density == pytest.approx(2 / 3)


def test_tv_equals_one_minus_kept_for_every_sparse_pattern():
    rng = np.random.default_rng(5)
    n, d = 24, 6
    q, k = rng.standard_normal((n, d)), rng.standard_normal((n, d))
    head = _head(q @ k.T * 0.7, rng.standard_normal((n, d)), query=q, key=k)
    cfg = ef.PatternConfig(window=2, block=4, n_buckets=4, global_queries=(0,), global_keys=(0,))
    for a in ef.approximate_head(head, config=cfg, patterns=ef.SPARSE_PATTERNS):
        rows_kept = (ef.masked_softmax(head.scores, head.allowed)[0] * a.mask).sum(axis=1)
        ok = a.mask.any(axis=1)
        assert a.tv == pytest.approx(np.mean(np.where(ok, 1 - rows_kept, 1.0)), abs=1e-9), a.name
        assert np.allclose(a.pattern.sum(axis=1)[ok], 1.0)
        assert (a.pattern[~a.mask] == 0).all()


def test_empty_rows_count_as_lost():
    # cross attention, every key points opposite every query: no LSH bucket is ever shared
    rng = np.random.default_rng(2)
    u = rng.standard_normal(4)
    q = np.outer([1.0, 2.0, 3.0], u)
    k = np.outer([-1.0, -0.5, -2.0, -4.0], u)
    head = _head(q @ k.T, rng.standard_normal((4, 2)), query=q, key=k, cross=True)
    (lsh,) = ef.approximate_head(head, config=ef.PatternConfig(n_buckets=2, n_hashes=1), patterns=(ef.LSH,))
    assert lsh.empty_rows == 3
    assert lsh.kept_mass == 0 and lsh.tv == 1.0
    assert (lsh.output == 0).all() and lsh.output_error == pytest.approx(1.0)


def test_causal_patterns_never_use_the_future():
    rng = np.random.default_rng(1)
    n, d = 16, 4
    q, k, v = (rng.standard_normal((n, d)) for _ in range(3))
    tril = np.tril(np.ones((n, n), bool))
    head = _head(q @ k.T, v, allowed=tril, query=q, key=k, causal=True)
    cfg = ef.PatternConfig(window=2, block=4, n_random=3, n_buckets=4, rank=3, global_queries=(0, 5),
                           global_keys=(0, 5))
    for a in ef.approximate_head(head, config=cfg):
        assert not (a.mask & ~tril).any(), a.name
        assert np.abs(a.pattern[~tril]).max() == 0, a.name


def test_linformer_matches_projected_keys_and_values():
    """softmax(q (E_i K)^T * scale) (E_i V), E_i = E over the keys query i may see, renormalised."""
    rng = np.random.default_rng(4)
    n, d, rank, scale = 10, 3, 4, 0.5
    q, k, v = (rng.standard_normal((n, d)) for _ in range(3))
    tril = np.tril(np.ones((n, n), bool))
    head = _head(scale * q @ k.T, v, allowed=tril, query=q, key=k, causal=True)
    (lin,) = ef.approximate_head(head, config=ef.PatternConfig(rank=rank, seed=9), patterns=(ef.LINFORMER,))
    e = ef.linformer_projection(rank, n, seed=9)
    assert (e >= 0).all() and np.allclose(e.sum(axis=1), 1)
    for i in range(n):
        ei = e * tril[i]
        ei = ei / ei.sum(axis=1, keepdims=True)
        logits = scale * (ei @ k) @ q[i]
        p = np.exp(logits - logits.max())
        p /= p.sum()
        assert np.allclose(lin.output[i], p @ (ei @ v))
    assert np.allclose(lin.pattern.sum(axis=1), 1) and (lin.pattern >= 0).all()
    assert np.isnan(lin.kept_mass)


def test_low_rank_bound_is_eckart_young():
    rng = np.random.default_rng(3)
    a = rng.random((9, 7))
    u, s, vt = np.linalg.svd(a, full_matrices=False)
    for k in (1, 3):
        assert np.allclose(ef.best_rank_k(a, k), (u[:, :k] * s[:k]) @ vt[:k])
        assert np.allclose(ef.best_rank_k(a.T, k), ((u[:, :k] * s[:k]) @ vt[:k]).T)
    assert np.allclose(ef.best_rank_k(a, 7), a)
    big = rng.random((120, 100))                        # the iterative (ARPACK) path
    u, s, vt = np.linalg.svd(big, full_matrices=False)
    assert np.allclose(ef.best_rank_k(big, 5), (u[:, :5] * s[:5]) @ vt[:5])
    assert np.allclose(ef.best_rank_k(big.T, 5), ((u[:, :5] * s[:5]) @ vt[:5]).T)
    # uniform attention is rank 1: the rank-1 bound reproduces it exactly
    head = _head(np.zeros((5, 5)), rng.standard_normal((5, 3)))
    (low,) = ef.approximate_head(head, config=ef.PatternConfig(rank=1), patterns=(ef.LOWRANK,))
    assert low.output_error == pytest.approx(0, abs=1e-12) and np.isnan(low.kl)


def test_synthesizer_ignores_the_input():
    rng = np.random.default_rng(0)
    v = rng.standard_normal((6, 2))
    cfg = ef.PatternConfig(seed=2)
    (a,) = ef.approximate_head(_head(rng.standard_normal((6, 6)), v), config=cfg, patterns=(ef.SYNTHESIZER,))
    (b,) = ef.approximate_head(_head(rng.standard_normal((6, 6)), v), config=cfg, patterns=(ef.SYNTHESIZER,))
    (c,) = ef.approximate_head(_head(np.zeros((6, 6)), v), config=ef.PatternConfig(seed=3),
                               patterns=(ef.SYNTHESIZER,))
    assert np.allclose(a.pattern, b.pattern) and not np.allclose(a.pattern, c.pattern)
    assert np.allclose(a.pattern.sum(axis=1), 1)


def test_unknown_pattern_is_refused():
    with pytest.raises(ValueError, match="unknown pattern"):
        ef.approximate_head(_head(np.zeros((2, 2)), np.ones((2, 1))), config=ef.PatternConfig(),
                            patterns=("nope",))


def _internals(n_heads=3, n=12, d=4, *, kind="encoder", seed=0):
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((n_heads, n, d)).astype(np.float32) for _ in range(3))
    scores = np.einsum("hqd,hkd->hqk", q, k) / 2
    mask = np.tril(np.ones((n, n), bool)) if kind == "decoder" else np.ones((n, n), bool)
    pattern, _ = ef.masked_softmax(scores, mask)
    return LayerInternals(kind=kind, layer=0, hidden=None, query=q, key=k, value=v, scores=scores, mask=mask,
                          scaling=0.5, pattern=pattern.astype(np.float32), head_output=pattern @ v)


@pytest.mark.parametrize("kind", ["encoder", "decoder", "cross"])
def test_layer_metrics_match_per_head_runs(kind):
    """The all-heads summary scores sparse patterns from their entries only: same numbers as the dense path."""
    li = _internals(kind=kind, n=20)
    if kind == "cross":
        # every key points along -u and queries 0..4 along +u: those queries share no LSH bucket
        # with any key, so both paths must report empty rows
        u = np.random.default_rng(7).standard_normal(4)
        q = li.query.copy()
        q[:, :5] = np.linspace(1, 2, 5)[:, None] * u
        k = -np.linspace(0.5, 3, 20)[None, :, None] * u * np.ones((3, 1, 1))
        scores = np.einsum("hqd,hkd->hqk", q, k) / 2
        li = LayerInternals(**{**li.__dict__, "query": q, "key": k, "scores": scores})
    cfg = ef.PatternConfig(window=2, rank=2, n_buckets=4, n_hashes=1, block=6, global_queries=(0, 3),
                           global_keys=(1,))
    lm = ef.layer_metrics(li, config=cfg)
    assert lm.output_error.shape == (3, len(ef.PATTERNS))
    for h in range(3):
        per = ef.approximate_head(ef.HeadInput.from_internals(li, h), config=cfg)
        for attr, arr in (("kept_mass", lm.kept_mass), ("tv", lm.tv), ("kl", lm.kl),
                          ("output_error", lm.output_error), ("density", lm.density), ("empty_rows", lm.empty_rows)):
            assert [getattr(a, attr) for a in per] == pytest.approx(list(arr[h]), nan_ok=True, abs=1e-9), attr
    assert (lm.output_error[:, 0] < 1e-6).all()
    if kind == "cross":
        assert lm.empty_rows[:, ef.PATTERNS.index(ef.LSH)].sum() > 0


def test_head_summary_tells_local_from_global_heads():
    n, w = 10, 1
    eye = np.eye(n)
    to_first = np.zeros((n, n))
    to_first[:, 0] = 1
    shifted = np.zeros((n, n))
    shifted[np.arange(n), (np.arange(n) + 5) % n] = 1
    pattern = np.stack([eye, to_first, shifted])[None]            # (1 layer, 3 heads, n, n)
    s = ef.head_summary(pattern, config=ef.PatternConfig(window=w, global_keys=(0,)), causal=False)
    assert s.local[0].tolist() == pytest.approx([1.0, 0.2, 0.0])
    assert s.global_[0].tolist() == pytest.approx([0.0, 0.8, 0.1])
    assert s.long_range[0].tolist() == pytest.approx([0.0, 0.0, 0.9])
    assert s.role[0].tolist() == ["local", "global", "long-range"]
    assert s.mean_distance[0, 0] == 0 and s.mean_distance[0, 2] == pytest.approx(5.0)
    win = ef.FIXED_PATTERNS.index(ef.WINDOW)
    assert s.kept[0, :, win].tolist() == pytest.approx([1.0, 0.2, 0.0])


def test_default_globals():
    from viz.result import TokenSeq
    z = np.zeros(4, dtype=np.int64)
    seq = TokenSeq(("[CLS]", "a", "b", "[SEP]"), ("[CLS]", "a", "b", "[SEP]"), z,
                   np.array([T, F, F, T]), z, z)
    assert ef.default_globals(seq) == (0, 3)
    plain = TokenSeq(("a", "b"), ("a", "b"), z[:2], np.array([F, F]), z[:2], z[:2])
    assert ef.default_globals(plain) == (0,)


# ---------------------------------------------------------------- cost model

def test_cost_model_growth():
    cfg = ef.PatternConfig(window=4, rank=8)
    rows = {(r.pattern, r.length): r for r in ef.cost_model((1024, 2048, 4096), config=cfg)}
    assert rows["full", 1024].score_entries == 1024 ** 2
    assert rows["full", 2048].score_entries / rows["full", 1024].score_entries == 4
    assert rows["window", 2048].score_entries / rows["window", 1024].score_entries == 2
    assert rows["window", 1024].score_entries == 1024 * 9
    assert rows["linformer", 1024].score_entries == 1024 * 8
    for (name, n), r in rows.items():
        assert r.score_entries <= rows["full", n].score_entries
        assert r.flops > 0 and r.memory_bytes > 4 * r.score_entries
    assert rows["synthesizer", 4096].flops < rows["full", 4096].flops       # no q.k
    causal = {(r.pattern, r.length): r for r in ef.cost_model((128,), config=cfg, causal=True)}
    assert causal["full", 128].score_entries == 128 * 129 / 2
    assert causal["window", 128].score_entries == 128 * 5


# ---------------------------------------------------------------- figures

def test_pool_matrix_keeps_row_sums():
    rng = np.random.default_rng(0)
    a = rng.random((100, 90))
    a /= a.sum(axis=1, keepdims=True)
    pooled, qe, ke = eff.pool_matrix(a, max_cells=16, sum_keys=True)
    assert pooled.shape == (16, 16) and qe[-1] == 100 and ke[-1] == 90
    assert np.allclose(pooled.sum(axis=1), 1)
    mask, _, _ = eff.pool_matrix(np.eye(100), max_cells=10)
    assert np.allclose(mask, np.eye(10) * 0.1)
    same, _, _ = eff.pool_matrix(a[:8, :8], max_cells=16)
    assert np.allclose(same, a[:8, :8])


def test_grid_detail_and_tables():
    li = _internals(n=40)
    cfg = ef.PatternConfig(window=2, rank=3)
    approx = ef.approximate_head(ef.HeadInput.from_internals(li, 1), config=cfg)
    labels = [f"t{i}" for i in range(40)]
    grid = eff.pattern_grid_figure(approx, labels, labels, max_cells=20)
    assert len(grid.data) == len(ef.PATTERNS)
    titles = [a.text for a in grid.layout.annotations]
    assert titles == [eff.short_title_of(p) for p in ef.PATTERNS]
    win = ef.PATTERNS.index(ef.WINDOW)
    assert np.allclose(np.asarray(grid.data[win].z), eff.pool_matrix(approx[win].pattern, max_cells=20,
                                                                      sum_keys=True)[0], atol=1e-6)
    masks = eff.pattern_grid_figure(approx, labels, labels, show="mask")
    assert np.array_equal(np.asarray(masks.data[win].z), approx[win].mask.astype(np.float32))
    assert masks.layout.coloraxis.cmax == 1
    detail = eff.detail_figure(approx[0].pattern, approx[win], labels, labels)
    assert len(detail.data) == 3 and detail.layout.yaxis.autorange == "reversed"
    assert np.allclose(np.asarray(detail.data[2].z), approx[win].pattern, atol=1e-6)
    table = eff.metrics_frame(approx)
    assert list(table["key"]) == list(ef.PATTERNS)
    assert table.loc[0, "output rel. error"] == pytest.approx(0, abs=1e-6)
    lm = eff.layer_metrics_frame(ef.layer_metrics(li, config=cfg))
    assert len(lm) == len(ef.PATTERNS) and lm.loc[0, "TV (mean)"] == pytest.approx(0, abs=1e-6)


def test_summary_and_cost_figures():
    pattern = np.stack([_internals(seed=s).pattern for s in range(2)])     # (2 layers, 3 heads, 12, 12)
    s = ef.head_summary(pattern, config=ef.PatternConfig(window=1), causal=False)
    fig = eff.head_summary_figure(s)
    assert len(fig.data) == 3 and np.allclose(np.asarray(fig.data[0].z), s.local)
    assert fig.layout.yaxis.autorange == "reversed"
    assert eff.role_counts(s).to_numpy().sum() == 6
    cost = eff.cost_figure(ef.cost_model(config=ef.PatternConfig()), mark_length=512)
    assert len(cost.data) == 3 * 9 and cost.layout.xaxis.type == "log"
    full = [t for t in cost.data if t.name == eff.title_of("full")][0]
    assert list(full.x) == list(ef.DEFAULT_LENGTHS)


def test_attention_colour_scale():
    lin = eff.attention_scale(0.0, 1.0)
    assert lin[0][0] == 0 and lin[-1][0] == 1
    assert [p for p, _ in lin] == pytest.approx(np.linspace(0, 1, len(lin)).tolist())
    sq = eff.attention_scale(0.0, 1.0, gamma=0.5)
    # square root: the middle colour sits at a quarter of the range, so faint weights get colour
    mid = len(sq) // 2
    assert sq[mid][0] == pytest.approx((mid / (len(sq) - 1)) ** 2)
    signed = eff.attention_scale(-0.1, 0.9)
    assert signed[0][1] == "rgb(178,24,43)" and signed[1] == [pytest.approx(0.1), "rgb(255,255,255)"]
    assert all(a[0] <= b[0] for a, b in zip(signed, signed[1:]))


def test_linformer_density_is_capped_by_the_keys():
    rng = np.random.default_rng(0)
    head = _head(rng.standard_normal((4, 3)), rng.standard_normal((3, 2)), cross=True)
    (lin,) = ef.approximate_head(head, config=ef.PatternConfig(rank=8), patterns=(ef.LINFORMER,))
    assert lin.density == 1.0
    head = _head(rng.standard_normal((6, 6)), rng.standard_normal((6, 2)), allowed=np.tril(np.ones((6, 6), bool)),
                 causal=True)
    (lin,) = ef.approximate_head(head, config=ef.PatternConfig(rank=2), patterns=(ef.LINFORMER,))
    assert lin.density == pytest.approx((1 + 2 * 5) / 21)


def test_labels_are_escaped():
    li = _internals(n=6)
    approx = ef.approximate_head(ef.HeadInput.from_internals(li, 0), config=ef.PatternConfig(),
                                 patterns=(ef.FULL, ef.WINDOW))
    evil = ["<img src=x onerror=alert(1)>"] * 6
    fig = eff.detail_figure(approx[0].pattern, approx[1], evil, evil)
    assert all("<img" not in t for t in fig.layout.xaxis.ticktext)


# ---------------------------------------------------------------- torch micro-benchmark

def test_window_attention_equals_masked_full_attention():
    torch = pytest.importorskip("torch")
    from viz import costbench
    gen = torch.Generator().manual_seed(0)
    for n, w in ((37, 5), (64, 8), (8, 16)):
        q, k, v = (torch.randn(n, 4, generator=gen) for _ in range(3))
        scores = q @ k.T * 0.5
        i = torch.arange(n)
        scores = scores.masked_fill((i[:, None] - i[None, :]).abs() > w, float("-inf"))
        ref = torch.softmax(scores, -1) @ v
        assert torch.allclose(costbench.window_attention(q, k, v, w), ref, atol=1e-5)
        assert torch.allclose(costbench.full_attention(q, k, v), torch.softmax(q @ k.T * 0.5, -1) @ v, atol=1e-5)


def test_bench_respects_budget_and_caches():
    from viz import costbench
    none = costbench.run(budget_s=0.0, lengths=(64, 128))
    assert none.rows == () and none.skipped == (64, 128) and none.budget_s == 0.0
    some = costbench.run(budget_s=5.0, lengths=(32, 64), repeats=1)
    assert [r.length for r in some.rows] == [32, 64]
    assert all(r.full_ms > 0 and r.window_ms > 0 for r in some.rows)
    assert costbench.run(budget_s=5.0, lengths=(32, 64), repeats=1) is some
    fig = eff.bench_figure(some)
    assert len(fig.data) == 2 and "budget 5.0 s" in fig.layout.title.text


# ---------------------------------------------------------------- the full pattern reproduces real models

def _check_full_reproduces(result):
    assert result.internals, "capture recorded no internals"
    for kind in result.kinds:
        block = result.block(kind)
        for layer in range(block.n_layers):
            li = result.internals[(kind, layer)]
            assert li.scores.shape == block.pattern.shape[1:], (kind, layer)
            static = ef.static_masks(np.asarray(li.mask, bool), ef.PatternConfig(), causal=kind == "decoder")
            for head in range(block.n_heads):
                (full,) = ef.approximate_head(ef.HeadInput.from_internals(li, head), config=ef.PatternConfig(),
                                              patterns=(ef.FULL,), static=static)
                diff = np.abs(full.pattern - block.pattern[layer, head]).max()
                assert diff <= 1e-5, (kind, layer, head, diff)
                if kind == "decoder":
                    assert not np.triu(full.mask, 1).any()


def test_full_pattern_reproduces_embedded_model():
    from viz.capture import capture
    _check_full_reproduces(capture("The animal didn't cross the street because it was too tired.",
                                   internals=True))


@pytest.mark.parametrize("family", ["encoder", "decoder", "encoder-decoder", "t5"])
def test_full_pattern_reproduces_tiny_models(tiny_models, family):
    from viz.capture import capture
    result = capture("the cat sat on the mat because it was tired", target="the dog ran",
                     model=tiny_models[family], internals=True)
    _check_full_reproduces(result)
    # and the whole lab runs on every block of the family
    for kind in result.kinds:
        lm = ef.layer_metrics(result.internals[(kind, 0)], config=ef.PatternConfig(window=1, rank=2))
        assert np.isfinite(lm.tv).all() and (lm.output_error[:, 0] < 1e-5).all()


# ---------------------------------------------------------------- the page (AppTest)

PAGE = "pages/efficient_attention.py"


def _page_ok(at):
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    heads = [s.value for s in at.subheader]
    assert any("every pattern" in h for h in heads) and any("Layers × heads" in h for h in heads)
    assert any("costs" in h for h in heads)
    return heads


def test_page_embedded_model_honours_url_state(app_test):
    at = app_test(PAGE, text="The animal didn't cross the street because it was too tired.", layer=2, head=5,
                  window=2, rank=3, pattern="bigbird", globals="first", colour="linear")
    heads = _page_ok(at)
    assert any(h.startswith("Layer 2, head 5") for h in heads)
    knobs = {n.label: n.value for n in at.number_input}
    assert knobs["Window w (each side)"] == 2 and knobs["Rank k"] == 3
    assert at.selectbox(key="w_pattern").value == "bigbird"
    assert at.radio(key="w_globals").value == "first"
    assert at.radio(key="w_colour").value == "linear"
    table = at.dataframe[0].value
    assert len(table) == len(ef.PATTERNS)
    assert table["output rel. error"].iloc[0] == pytest.approx(0, abs=1e-3)      # full pattern: no error
    # changing a knob reruns and lands in the URL
    at.number_input(key="w_window").set_value(5).run()
    assert at.query_params["window"] == ["5"] or at.query_params["window"] == "5"
    at.selectbox(key="w_pattern").set_value("lsh").run()
    _page_ok(at)
    assert "lsh" in str(at.query_params["pattern"])


@pytest.mark.parametrize("family,kind", [("decoder", None), ("encoder-decoder", "cross"),
                                         ("encoder-decoder", "decoder")])
def test_page_tiny_families(app_test, tiny_models, family, kind):
    params = dict(model=tiny_models[family], text="the cat sat on the mat because it was tired",
                  target="the dog ran")
    if kind:
        params["kind"] = kind
    at = app_test(PAGE, **params)
    _page_ok(at)
    table = at.dataframe[0].value
    assert table["output rel. error"].iloc[0] == pytest.approx(0, abs=1e-3)
    if kind:
        assert at.query_params["kind"] in (kind, [kind])
