"""The attention-math steps: hand-made arrays, then the real internals of every family (tiny and embedded)."""
from __future__ import annotations

import numpy as np
import pytest

from viz import mathsteps
from viz.figures import math as math_figures
from viz.capture import capture
from viz.result import LayerInternals

TOL = 1e-5


def _internals(*, bias=None, causal=False, seed=0, n_heads=2, t=5, d=4, scaling=None):
    """A LayerInternals built by hand the way a model would fill it."""
    rng = np.random.default_rng(seed)
    q, k, v = (rng.normal(size=(n_heads, t, d)).astype(np.float32) for _ in range(3))
    scaling = d ** -0.5 if scaling is None else scaling
    scores = scaling * np.einsum("hqd,hkd->hqk", q, k)
    if bias is not None:
        scores = scores + bias
    mask = np.tril(np.ones((t, t), dtype=bool)) if causal else np.ones((t, t), dtype=bool)
    s = np.where(mask, scores, -np.inf)
    pattern = np.exp(s - s.max(-1, keepdims=True))
    pattern = (pattern / pattern.sum(-1, keepdims=True)).astype(np.float32)
    return LayerInternals(kind="decoder" if causal else "encoder", layer=1, hidden=rng.normal(size=(t, 8)),
                          query=q, key=k, value=v, scores=scores.astype(np.float32), mask=mask,
                          scaling=float(scaling), pattern=pattern,
                          head_output=np.einsum("hqk,hkd->hqd", pattern, v))


def test_steps_follow_the_formula():
    li = _internals()
    st = mathsteps.math_steps(li, head=1, query_pos=2)
    np.testing.assert_allclose(st.dots, li.key[1] @ li.query[1, 2], rtol=1e-5)
    np.testing.assert_allclose(st.scaled, st.dots / 2.0, rtol=1e-6)   # d=4: 1/sqrt(4)
    assert st.bias is None and st.standard_scaling and st.n_masked == 0
    assert st.weights.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(st.output, st.weights @ li.value[1], rtol=1e-6)
    assert st.max_abs_diff <= TOL and st.head_max_abs_diff <= TOL and st.output_max_abs_diff <= TOL
    assert st.shapes.per_head == (8, 4) and st.shapes.all_heads == (8, 8)


def test_causal_mask_hides_the_future():
    li = _internals(causal=True)
    st = mathsteps.math_steps(li, head=0, query_pos=1)
    assert list(st.allowed) == [True, True, False, False, False]
    assert (st.weights[2:] == 0).all() and np.isneginf(st.masked[2:]).all()
    assert "Causal" in mathsteps.mask_reason(st.allowed, kind="decoder", query_pos=1)
    assert "No mask" in mathsteps.mask_reason(np.ones(3, bool), kind="encoder", query_pos=1)
    assert "Padding" in mathsteps.mask_reason(np.array([True, True, False]), kind="cross", query_pos=0)


def test_position_bias_is_its_own_step():
    bias = np.random.default_rng(1).normal(size=(2, 5, 5))
    li = _internals(bias=bias, scaling=1.0)
    st = mathsteps.math_steps(li, head=0, query_pos=3)
    np.testing.assert_allclose(st.bias, bias[0, 3], atol=1e-5)
    assert not st.standard_scaling
    assert st.max_abs_diff <= TOL


def test_a_wrong_pattern_is_caught():
    li = _internals()
    bad = li.pattern.copy()
    bad[0, 2] = np.roll(bad[0, 2], 1)
    wrong = LayerInternals(**{**li.__dict__, "pattern": bad})
    st = mathsteps.math_steps(wrong, head=0, query_pos=2)
    assert st.max_abs_diff > 1e-3 and st.head_max_abs_diff == pytest.approx(st.max_abs_diff)
    assert mathsteps.math_steps(wrong, head=1, query_pos=2).head_max_abs_diff <= TOL


def test_fully_masked_row_gives_zero_weights():
    w = mathsteps.softmax_masked(np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[True, False], [False, False]]))
    np.testing.assert_array_equal(w, [[1.0, 0.0], [0.0, 0.0]])


def test_out_of_range_is_refused():
    li = _internals()
    with pytest.raises(ValueError, match="head"):
        mathsteps.math_steps(li, head=5, query_pos=0)
    with pytest.raises(ValueError, match="query position"):
        mathsteps.math_steps(li, head=0, query_pos=9)


def test_query_position_from_url():
    labels = ("[CLS]", "the", "keys", "are", "the", "[SEP]")
    assert mathsteps.query_position(labels, "are") == 3
    assert mathsteps.query_position(labels, "The") == 1       # first occurrence, case-insensitive
    assert mathsteps.query_position(labels, "4") == 4
    assert mathsteps.query_position(labels, "99", default=2) == 2
    assert mathsteps.query_position(labels, "absent", default=1) == 1
    assert mathsteps.query_position(labels, None, default=1) == 1
    assert mathsteps.default_query(np.array([True, False, False])) == 1


def test_figures_keep_repeated_tokens_apart():
    fig = math_figures.vector_strip_figure(np.arange(12.0).reshape(3, 4), ["the", "cat", "the"], highlight=2)
    np.testing.assert_array_equal(fig.data[0].z, np.arange(12.0).reshape(3, 4))
    assert list(fig.layout.yaxis.ticktext) == ["the", "cat", "the"] and fig.layout.yaxis.autorange == "reversed"
    assert len(fig.layout.shapes) == 1 and fig.layout.shapes[0].y0 == 1.5
    bars = math_figures.key_bars_figure(np.array([1.0, -np.inf, 2.0]), ["a", "b", "c"],
                                        allowed=np.array([True, False, True]))
    np.testing.assert_array_equal(bars.data[0].y, [1.0, 0.0, 2.0])
    with pytest.raises(ValueError):
        math_figures.vector_strip_figure(np.zeros((2, 3)), ["one"])


# ----------------------------------------------------------------- real models
def _check_every_head(result, kind, layer):
    li = result.internals[(kind, layer)]
    returned = result.block(kind).pattern[layer]          # what output_attentions gave back
    worst = 0.0
    for head in range(li.query.shape[0]):
        for query_pos in range(li.query.shape[1]):
            st = mathsteps.math_steps(li, head=head, query_pos=query_pos)
            worst = max(worst, st.max_abs_diff, float(np.abs(st.weights - returned[head, query_pos]).max()),
                        st.output_max_abs_diff)
    return worst


@pytest.mark.parametrize("family", ["encoder", "decoder", "encoder-decoder", "t5"])
def test_tiny_models_every_block(tiny_models, family):
    kwargs = {"target": "der hund ist"} if family in ("encoder-decoder", "t5") else {}
    r = capture("the animal didn't cross the street because it was too tired", model=tiny_models[family],
                internals=True, **kwargs)
    for kind in r.kinds:
        for layer in range(r.block(kind).n_layers):
            assert _check_every_head(r, kind, layer) <= TOL, (family, kind, layer)
    if family == "t5":   # T5: no 1/sqrt(d_k), a learned position bias in self-attention
        st = mathsteps.math_steps(r.internals[("encoder", 0)], head=0, query_pos=1)
        assert st.scaling == 1.0 and st.bias is not None
    if family == "decoder":
        st = mathsteps.math_steps(r.internals[("decoder", 0)], head=0, query_pos=2)
        assert st.n_masked == len(r.tokens) - 3 and "Causal" in mathsteps.mask_reason(
            st.allowed, kind="decoder", query_pos=2)
    if family == "encoder-decoder":
        li = r.internals[("cross", 1)]
        assert li.key.shape[1] == len(r.encoder) and li.query.shape[1] == len(r.decoder)


def test_embedded_model_several_heads():
    r = capture("The keys that the man near the cabinets holds are on the table.",
                internals=[("encoder", 0), ("encoder", 3), ("encoder", 5)])
    for layer in (0, 3, 5):
        assert _check_every_head(r, "encoder", layer) <= TOL
    st = mathsteps.math_steps(r.internals[("encoder", 3)], head=1, query_pos=r.tokens.labels.index("are"))
    assert st.standard_scaling and st.scaling == pytest.approx(1 / np.sqrt(32))
    assert st.shapes.per_head == (384, 32) and st.shapes.all_heads == (384, 384)
