"""Long inputs (issue 16) on the heatmap and in exports: a zoomed region, the block overview, NPZ/CSV files.

The tiny Llama of tests/test_long.py (4,096 positions, 3 layers x 4 heads, 2 KV heads) at ~1,500 tokens,
captured the long way (a LazyPattern recomputing each layer from queries and keys). Every value a person
reads or downloads is compared with an independent eager transformers forward pass (output_attentions).
"""
from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pandas as pd
import pytest
from test_long import long_llama, long_mode, long_text, pair  # noqa: F401 - the shared long-input fixtures

from viz import export
from viz.result import PatternTooLarge, is_lazy
from viz.views import heatmap as heatmap_view
from viz.views.heatmap import MAX_SIDE, Window, block_max, build_heatmap, parse_range, window_of


@pytest.fixture(scope="module")
def eager(long_llama):  # noqa: F811
    """(token strings, (n_layers, n_heads, T, T) float32) from transformers' own eager attention."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(long_llama)
    model = AutoModelForCausalLM.from_pretrained(long_llama, attn_implementation="eager").eval()
    ids = tok(long_text(), return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model(input_ids=ids, output_attentions=True)
    assert len(out.attentions) == 3 and out.attentions[0] is not None
    return tok.convert_ids_to_tokens(ids[0].tolist()), torch.stack(out.attentions)[:, 0].numpy()


def payload(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="hm-data">(.*?)</script>', html, re.S)
    assert m, "no heatmap data"
    return json.loads(m.group(1))


def drawn(data: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(data["z"]), "<f4").reshape(data["nq"], data["nk"])


def causal_reference(matrix: np.ndarray, window: Window) -> np.ndarray:
    ref = matrix[window.q0:window.q1, window.k0:window.k1].astype(np.float64)
    future = np.arange(window.k0, window.k1)[None, :] > np.arange(window.q0, window.q1)[:, None]
    ref[future] = np.nan
    return ref


# ------------------------------------------------------------------ the window and its parsing
def test_ranges_parse_both_ends_included_and_refuse_anything_else():
    assert parse_range("100-163", 2048) == (100, 164)
    assert parse_range("163..100", 2048) == (100, 164)          # either order
    assert parse_range("7", 10) == (7, 8) and parse_range("5:99", 10) == (5, 10)   # clamped to the matrix
    for bad in ("", None, "12-", "a-b", "1-2<script>", "-3", "10-20", "1e3"):
        assert parse_range(bad, 10) is None, bad
    w = window_of("100-163", None, 2048, 2048)
    assert (w.q0, w.q1, w.k0, w.k1) == (100, 164, 0, 2048) and not w.is_whole(2048, 2048)
    assert w.queries == "100-163" and w.keys == "0-2047"
    assert window_of(None, None, 9, 9).is_whole(9, 9)


def test_block_max_against_a_plain_loop():
    rng = np.random.default_rng(0)
    z = rng.random((11, 7)).astype(np.float32)
    z[np.triu_indices(11, k=1, m=7)] = np.nan
    z[:3, 4:] = np.nan                                           # a block with nothing allowed
    out = block_max(z, 3, 2)
    assert out.shape == (4, 4)
    for i in range(4):
        for j in range(4):
            cells = z[3 * i:3 * i + 3, 2 * j:2 * j + 2]
            if np.isnan(cells).all():
                assert np.isnan(out[i, j])
            else:
                assert out[i, j] == np.nanmax(cells)


# ------------------------------------------------------------------ the heatmap on a long result
def test_zoomed_region_is_the_exact_pattern(pair, eager, long_mode):  # noqa: F811
    lazy, _ = pair
    tokens, reference = eager
    block = lazy.block()
    assert is_lazy(block.pattern) and tuple(block.queries.tokens) == tuple(tokens)
    t = len(tokens)
    labels = list(block.queries.labels)
    window = Window(900, 964, 850, 914)                          # crosses the diagonal: masked cells too
    for layer, head in ((1, 2), (2, 0)):
        matrix = block.pattern[layer:layer + 1][:, head].mean(axis=0)   # what pages/heatmap.py draws
        data = payload(build_heatmap(matrix, labels, labels, causal=True, window=window, zoomable=True).html)
        assert (data["q0"], data["k0"], data["qs"], data["ks"], data["nQ"]) == (900, 850, 1, 1, t)
        assert data["q"] == labels[900:964] and data["k"] == labels[850:914] and data["whole"] is False
        ref = causal_reference(reference[layer, head], window)
        z = drawn(data)
        assert np.array_equal(np.isnan(z), np.isnan(ref))
        assert np.nanmax(np.abs(z - ref)) < 1e-5                 # the recomputed layer, not a downsample
    # the mean of heads, the other thing the page draws
    matrix = block.pattern[1:2].mean(axis=1)[0]
    z = drawn(payload(build_heatmap(matrix, labels, labels, causal=True, window=window).html))
    assert np.nanmax(np.abs(z - causal_reference(reference[1].mean(0), window))) < 1e-5


def test_whole_long_matrix_is_drawn_as_block_maxima_and_says_so(pair, eager, long_mode):  # noqa: F811
    lazy, _ = pair
    _, reference = eager
    t = reference.shape[-1]
    labels = list(lazy.block().queries.labels)
    data = payload(build_heatmap(lazy.decoder_attentions[2][1], labels, labels, causal=True).html)
    size = -(-t // MAX_SIDE)
    assert data["qs"] == data["ks"] == size > 1 and data["nq"] == -(-t // size)
    assert len(data["q"]) == t                                  # every token, for the hover of a block
    ref = causal_reference(reference[2, 1], Window(0, t, 0, t))
    expected = block_max(ref.astype(np.float32), size, size)
    assert np.array_equal(np.isnan(drawn(data)), np.isnan(expected))
    assert np.nanmax(np.abs(drawn(data) - expected)) < 1e-5


def test_what_reaches_the_browser_is_bounded_at_2048_tokens():
    """A 2,048-token head as the page sends it: the overview and the largest regions stay ~1.5 MB
    (the whole matrix as float32 would be 22 MB of base64)."""
    rng = np.random.default_rng(0)
    t = 2048
    matrix = rng.random((t, t), dtype=np.float32)
    labels = [f"tok{i}" for i in range(t)]
    sizes = {}
    for name, window in (("whole", None), ("half", Window(0, 1024, 0, 1024)), ("region", Window(700, 1212, 300, 812)),
                         ("small", Window(10, 50, 0, 40))):
        view = build_heatmap(matrix, labels, labels, causal=True, window=window, zoomable=True)
        sizes[name] = len(view.fragment.encode("utf-8"))
        data = payload(view.fragment)
        assert max(data["nq"], data["nk"]) <= MAX_SIDE
    assert max(sizes.values()) < 2_000_000, sizes
    assert sizes["small"] < 100_000, sizes                        # labels of the region only, 40 x 40 weights
    # a region of at most MAX_SIDE per axis is cell by cell; a larger one is blocks
    assert payload(build_heatmap(matrix, labels, labels, window=Window(700, 1212, 300, 812)).html)["qs"] == 1
    assert payload(build_heatmap(matrix, labels, labels, window=Window(0, 1024, 0, 1024)).html)["qs"] == 2


def test_plotly_region_keeps_the_positions_of_the_whole_matrix():
    from viz.figures.attention import heatmap_figure
    z = np.tril(np.full((6, 6), 0.5, dtype=np.float32))
    fig = heatmap_figure(z[2:5, 1:5], list("cde"), list("bcde"), causal=True, query_start=2, key_start=1)
    assert list(fig.data[0].y) == ["2 c", "3 d", "4 e"] and list(fig.data[0].x)[0] == "1 b"
    got = np.asarray(fig.data[0].z, dtype=float)
    assert np.isnan(got[0, 2:]).all() and np.isfinite(got[0, :2]).all()   # query 2 sees keys 1 and 2 only


# ------------------------------------------------------------------ exports of a long result
def test_cli_capture_of_a_long_text_matches_eager_attention(long_llama, long_mode, eager, tmp_path):  # noqa: F811
    from viz import cli
    from viz.flow import rollout
    tokens, reference = eager
    out = tmp_path / "long.npz"
    assert cli.main(["capture", "--text", long_text(), "--model", long_llama, "--rollout", "--out", str(out)]) == 0
    with np.load(out) as data:
        assert tuple(data["tokens"]) == tuple(tokens)
        attentions = data["attentions"]
        assert attentions.shape == reference.shape and attentions.dtype == np.float32
        assert np.abs(attentions - reference).max() < 1e-5
        np.testing.assert_allclose(data["rollout"], rollout(reference), atol=1e-5)
        np.testing.assert_array_equal(data["kv_head"], [0, 0, 1, 1])


def test_save_npz_streams_a_lazy_pattern_without_materialising_it(pair, eager, long_mode, monkeypatch):  # noqa: F811
    import viz.result
    lazy, _ = pair
    _, reference = eager
    pattern = lazy.decoder_attentions
    assert pattern.full_nbytes > viz.result.MATERIALISE_LIMIT       # np.asarray would refuse it
    buffer = io.BytesIO()
    export.save_npz(buffer, {"attentions": pattern, "tokens": np.array(["a", "b"])})
    with np.load(io.BytesIO(buffer.getvalue())) as data:
        assert np.abs(data["attentions"] - reference).max() < 1e-5 and list(data["tokens"]) == ["a", "b"]


def test_app_npz_of_a_long_result_is_the_shown_layer_and_says_so(pair, eager, long_mode):  # noqa: F811
    lazy, _ = pair
    _, reference = eager
    t = reference.shape[-1]
    scope = export.npz_scope(lazy, layer=2)
    assert scope.layer == 2 and scope.nbytes == 4 * t * t * 4
    assert "layer 2 only" in scope.description and "python -m viz capture" in scope.description
    with np.load(io.BytesIO(export.npz_bytes(lazy, scope))) as data:
        assert data["attentions"].shape == (1, 4, t, t) and list(data["layers"]) == [2]
        assert np.abs(data["attentions"][0] - reference[2]).max() < 1e-5
    with pytest.raises(PatternTooLarge, match="npz_scope"):
        export.npz_bytes(lazy)                                    # never gigabytes in memory, never silently cut


def test_short_result_npz_scope_is_everything(tiny_models):
    from viz.capture import capture
    r = capture("the cat sat", model=tiny_models["llama"])
    scope = export.npz_scope(r, layer=1)
    assert scope.layer is None and "every layer" in scope.description
    with np.load(io.BytesIO(export.npz_bytes(r, scope))) as data:
        np.testing.assert_array_equal(data["attentions"], r.attentions)
        assert "layers" not in data.files


def test_region_csv_of_a_long_result_equals_eager(pair, eager, long_mode):  # noqa: F811
    lazy, _ = pair
    tokens, reference = eager
    block = lazy.block()
    scope = export.csv_scope(block, layer=1, head=3, rows=(1000, 1010), keys=(990, 1020))
    assert scope.n_rows(block) == 10 * 30 and "query rows 1000–1009 × keys 990–1019" in scope.description
    frame = pd.read_csv(io.BytesIO(export.attention_csv(block, scope)), keep_default_na=False)
    assert len(frame) == 300 and set(frame["layer"]) == {1} and set(frame["head"]) == {3}
    np.testing.assert_allclose(frame["weight"], reference[1, 3, 1000:1010, 990:1020].ravel(), atol=1e-6)
    assert list(frame["query_token"][:1]) == [tokens[1000]] and list(frame["key_token"][:2]) == tokens[990:992]


def test_whole_head_csv_is_written_in_chunks_and_is_exact(pair, eager, long_mode, monkeypatch):  # noqa: F811
    lazy, _ = pair
    _, reference = eager
    block = lazy.block()
    t = reference.shape[-1]
    monkeypatch.setattr(export, "CSV_CHUNK_ROWS", 50_000)       # several chunks on this input
    scope = export.csv_scope(block, layer=0, head=1)
    assert scope.n_rows(block) == t * t and "head 1" in scope.description
    frame = pd.read_csv(io.BytesIO(export.attention_csv(block, scope)), usecols=["query_pos", "key_pos", "weight"])
    assert len(frame) == t * t
    got = np.zeros((t, t))
    got[frame["query_pos"], frame["key_pos"]] = frame["weight"]
    assert np.abs(got - reference[0, 1]).max() < 1e-6


# ------------------------------------------------------------------ the heatmap page (AppTest)
def heatmap_payload(at) -> dict:
    found = [el.proto.body for el in at.get("html") if 'id="hm-data"' in el.proto.body]
    assert len(found) == 1
    return payload(found[0])


def test_heatmap_page_draws_the_region_in_the_url(app_test, long_llama, long_mode, eager):  # noqa: F811
    tokens, reference = eager
    at = app_test("pages/heatmap.py", model=long_llama, text=long_text(), layer=1, head=2,
                  queries="1200-1239", keys="1190-1229")
    assert not at.exception, at.exception
    data = heatmap_payload(at)
    assert (data["q0"], data["k0"], data["nq"], data["nk"], data["qs"]) == (1200, 1190, 40, 40, 1)
    assert data["zoom"] is True and "query rows 1,200–1,239 × keys 1,190–1,229" in data["title"]
    z = drawn(data)
    ref = causal_reference(reference[1, 2], Window(1200, 1240, 1190, 1230))
    assert np.nanmax(np.abs(z - ref)) < 1e-5
    assert [n.value for n in at.number_input] == [1200, 1239, 1190, 1229]
    captions = " ".join(c.value for c in at.caption)
    assert "head 2, query rows 1200–1239 × keys 1190–1229 (the heatmap's region), 1,600 rows" in captions
    assert "layer 1 only, every head" in captions                    # the NPZ of a long result, said
    assert at.query_params["queries"] == "1200-1239" and at.query_params["keys"] == "1190-1229"

    # type another region in the form
    at.number_input[0].set_value(10)
    at.number_input[1].set_value(19)
    at.number_input[2].set_value(0)
    at.number_input[3].set_value(9)
    next(b for b in at.button if b.label == "Zoom in").click()
    at.run()
    assert not at.exception, at.exception
    data = heatmap_payload(at)
    assert (data["q0"], data["k0"], data["nq"], data["nk"]) == (10, 0, 10, 10)
    assert np.nanmax(np.abs(drawn(data) - causal_reference(reference[1, 2], Window(10, 20, 0, 10)))) < 1e-5
    assert at.query_params["queries"] == "10-19"

    # back to the whole matrix: blocks, and the URL forgets the region
    next(b for b in at.button if b.label == "Whole matrix").click()
    at.run()
    data = heatmap_payload(at)
    assert data["whole"] is True and data["qs"] > 1 and "queries" not in at.query_params
    assert any("drawn as blocks" in c.value for c in at.caption)


def test_a_bad_region_in_the_url_falls_back_to_the_whole_matrix(app_test, tiny_models):
    at = app_test("pages/heatmap.py", model=tiny_models["encoder"], text="the cat sat on the mat",
                  queries="</script>", keys="9999-99999")
    assert not at.exception, at.exception
    data = heatmap_payload(at)
    assert data["whole"] is True and data["qs"] == 1 and "queries" not in at.query_params
    assert heatmap_view.Window(0, data["nq"], 0, data["nk"]).is_whole(data["nQ"], data["nK"])
