"""Unit tests of the head view builder (viz/views/head_view.py) on hand-made arrays."""
from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest

from viz.views.escape import script_json
from viz.views.head_view import (PAIR_SLICES, auto_threshold, build_head_view, head_colors, pair_slice,
                                  prune_edges)
from viz.result import Block, TokenSeq


def make_seq(labels, segments=None) -> TokenSeq:
    n = len(labels)
    seg = np.zeros(n, np.int64) if segments is None else np.asarray(segments, np.int64)
    return TokenSeq(tokens=tuple(labels), labels=tuple(labels), token_ids=np.arange(n),
                    special=np.zeros(n, bool), word_ids=np.arange(n), segment_ids=seg)


def softmax_pattern(n_layers, n_heads, n_q, n_k, *, seed=0, temp=3.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_layers, n_heads, n_q, n_k)) * temp
    p = np.exp(x - x.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)).astype(np.float32)


def payload(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="hv-data">(.*?)</script>', page, re.S)
    assert m, "data script not found"
    return json.loads(m.group(1))


def decode_layer(layer: dict, n_heads: int, n_q: int) -> dict:
    """(head, query, key) -> uint8 weight, read back from the base64 payload."""
    counts = np.frombuffer(base64.b64decode(layer["counts"]), "<u4")
    keys = np.frombuffer(base64.b64decode(layer["keys"]), "<u2" if layer["keyBytes"] == 2 else "<u4")
    weights = np.frombuffer(base64.b64decode(layer["weights"]), np.uint8)
    assert counts.shape == (n_heads * n_q,) and counts.sum() == len(keys) == len(weights)
    rows = np.repeat(np.arange(n_heads * n_q), counts)
    return {(int(r // n_q), int(r % n_q), int(k)): int(w) for r, k, w in zip(rows, keys, weights)}


# ------------------------------------------------------------------ escaping
EVIL = ["</script>", "<img src=x onerror=alert(1)>", "a&b", "<!--", "\u2028x\u2029", '"quoted"', "]]>"]


def test_script_json_escapes_html_breakers_and_round_trips():
    text = script_json({"labels": EVIL})
    for bad in ("<", ">", "&", "\u2028", "\u2029"):
        assert bad not in text
    assert json.loads(text) == {"labels": EVIL}


def test_token_text_cannot_break_out_of_the_page():
    seq = make_seq(["[CLS]", *EVIL, "[SEP]"])
    n = len(seq)
    block = Block("encoder", softmax_pattern(1, 2, n, n), seq, seq, False)
    page = build_head_view(block, title="<b>title</b>").html
    # Only our own two script elements close; no token markup survives anywhere in the page.
    assert page.count("</script>") == 2
    assert "<img" not in page and "<b>title" not in page and "<!--" not in page
    assert "&lt;b&gt;title" in page                              # the <title> is HTML-escaped
    data = payload(page)
    assert data["queries"]["labels"] == list(seq.labels)        # the JS gets the text intact
    assert data["title"] == "<b>title</b>"


def test_page_is_offline():
    seq = make_seq(list("abcd"))
    page = build_head_view(Block("encoder", softmax_pattern(1, 2, 4, 4), seq, seq, False)).html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "@import" not in page and "require(" not in page


# ------------------------------------------------------------------ colours
def _lab(hex_colors):
    rgb = np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in hex_colors]) / 255.0
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = lin @ np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722],
                          [0.0193, 0.1192, 0.9505]]).T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], -1)


@pytest.mark.parametrize("n_heads", [12, 16])
def test_head_colours_are_far_apart(n_heads):
    colors = head_colors(n_heads)
    assert len(colors) == n_heads and all(re.fullmatch(r"#[0-9a-f]{6}", c) for c in colors)
    lab = _lab(colors)
    dist = np.linalg.norm(lab[:, None] - lab[None], axis=-1)
    np.fill_diagonal(dist, np.inf)
    assert dist.min() > 30          # delta-E 76: clearly different colours, not shades of one
    assert (lab[:, 0] < 75).all()   # dark enough to read as a line on white


def test_many_heads_still_get_distinct_colours():
    colors = head_colors(40)
    assert len(set(colors)) == 40
    assert head_colors(40)[:12] == head_colors(12)


# ------------------------------------------------------------------ pruning
def test_prune_min_weight_and_quantisation():
    p = np.array([[[0.70, 0.25, 0.05, 0.0],
                   [0.001, 0.5, 0.499, 0.0]]], np.float32)    # (1 head, 2 queries, 4 keys)
    e = prune_edges(p, min_weight=0.06, max_edges=None)
    got = {(int(h), int(q), int(k)): int(w) for h, q, k, w in zip(e.head, e.query_pos, e.key_pos, e.weight)}
    assert got == {(0, 0, 0): round(0.7 * 255), (0, 0, 1): round(0.25 * 255),
                   (0, 1, 1): round(0.5 * 255), (0, 1, 2): round(0.499 * 255)}
    assert e.n_possible == 8
    assert e.kept_mass == pytest.approx((0.7 + 0.25 + 0.5 + 0.499) / 2, abs=1e-6)
    # weights that round to 0/255 never become edges, even with no threshold
    e0 = prune_edges(p, min_weight=0.0, max_edges=None)
    assert 0 not in e0.weight and len(e0) == 5


def test_prune_top_mass_keeps_strongest_edges_of_each_row():
    p = np.array([[[0.5, 0.3, 0.15, 0.05],
                   [0.05, 0.05, 0.1, 0.8]]], np.float32)
    e = prune_edges(p, min_weight=0.0, top_mass=0.75, max_edges=None)
    kept = {(int(q), int(k)) for q, k in zip(e.query_pos, e.key_pos)}
    # row 0 needs 0.5 + 0.3 to reach 0.75; row 1 reaches it with its single 0.8 edge
    assert kept == {(0, 0), (0, 1), (1, 3)}


def test_prune_max_edges_keeps_the_strongest_in_order():
    p = softmax_pattern(1, 3, 20, 20, seed=1)[0]
    e = prune_edges(p, min_weight=0.0, max_edges=50)
    assert len(e) == 50
    flat = np.ravel_multi_index((e.head, e.query_pos, e.key_pos), p.shape)
    assert (np.diff(flat) > 0).all()                                  # sorted by head, query, key
    dropped = np.ones(p.size, bool)
    dropped[flat] = False
    q8 = np.rint(p.ravel() * 255)
    assert q8[flat].min() >= q8[dropped].max()                       # nothing stronger was dropped


def test_auto_threshold_respects_budget():
    p = softmax_pattern(1, 4, 30, 30, seed=2)[0]
    e = prune_edges(p, min_weight=0.0, max_edges=None)
    t = auto_threshold(e, budget=300)
    t8 = round(t * 255)
    assert (e.weight >= t8).sum() <= 300 < (e.weight >= t8 - 1).sum()
    assert auto_threshold(e, budget=10 ** 9, floor=0.02) == pytest.approx(np.ceil(0.02 * 255) / 255)


# ------------------------------------------------------------------ slicing
def test_pair_slices_follow_segment_ids():
    seq = make_seq(["[CLS]", "a", "b", "[SEP]", "c", "d", "[SEP]"], [0, 0, 0, 0, 1, 1, 1])
    a, b = [0, 1, 2, 3], [4, 5, 6]
    assert [list(x) for x in pair_slice(seq, seq, "all")] == [list(range(7))] * 2
    assert [list(x) for x in pair_slice(seq, seq, "A->B")] == [a, b]
    assert [list(x) for x in pair_slice(seq, seq, "B->A")] == [b, a]
    assert [list(x) for x in pair_slice(seq, seq, "B->B")] == [b, b]
    single = make_seq(["[CLS]", "a", "[SEP]"])
    with pytest.raises(ValueError, match="no second sentence"):
        pair_slice(single, single, "A->B")
    with pytest.raises(ValueError):
        pair_slice(seq, seq, "A-B")
    assert set(PAIR_SLICES) == {"all", "A->A", "A->B", "B->A", "B->B"}


def test_pair_slice_sends_exactly_that_sub_block():
    labels = ["[CLS]", "a", "b", "[SEP]", "c", "d", "[SEP]"]
    seq = make_seq(labels, [0, 0, 0, 0, 1, 1, 1])
    pattern = softmax_pattern(2, 3, 7, 7, seed=3)
    view = build_head_view(Block("encoder", pattern, seq, seq, False), layers=1, pair="A->B",
                           min_weight=0.0, max_edges=None)
    data = payload(view.html)
    assert data["queries"]["labels"] == labels[:4] and data["keys"]["labels"] == labels[4:]
    assert data["queries"]["pos"] == [0, 1, 2, 3] and data["keys"]["pos"] == [4, 5, 6]
    edges = decode_layer(data["layers"][0], 3, 4)
    expected = np.rint(pattern[1][:, :4, 4:] * 255).astype(int)
    for (h, q, k), w in edges.items():
        assert w == expected[h, q, k]
    assert len(edges) == (expected > 0).sum()


def test_cross_attention_puts_decoder_on_query_side():
    enc = make_seq(["<s>", "the", "cat", "</s>"])
    dec = make_seq(["</s>", "<s>", "die", "Katze", "ist"])
    pattern = softmax_pattern(2, 4, 5, 4, seed=4)                 # (L, H, T_dec, T_enc)
    view = build_head_view(Block("cross", pattern, dec, enc, False), layers=0, min_weight=0.0, max_edges=None)
    data = payload(view.html)
    assert data["kind"] == "cross" and not data["causal"]
    assert data["queries"]["labels"] == list(dec.labels) and data["keys"]["labels"] == list(enc.labels)
    edges = decode_layer(data["layers"][0], 4, 5)
    assert max(k for _, _, k in edges) == 3 and max(q for _, q, _ in edges) == 4


def test_layers_and_heads_options():
    seq = make_seq(list("abcdef"))
    block = Block("decoder", softmax_pattern(3, 4, 6, 6), seq, seq, True)
    data = payload(build_head_view(block, layers=[2, 0], heads=[3, 1]).html)
    assert [layer["layer"] for layer in data["layers"]] == [2, 0]
    assert data["heads"] == [1, 3] and data["causal"] and len(data["colors"]) == 4
    with pytest.raises(ValueError):
        build_head_view(block, layers=3)
    with pytest.raises(ValueError):
        build_head_view(block, heads=[4])


# ------------------------------------------------------------------ budget
def test_512_tokens_stays_under_3_mb():
    n, n_heads = 512, 12
    seq = make_seq([f"tok{i}" for i in range(n)])
    # Worst case for pruning: every row spreads its weight evenly over 64 keys, so every one of
    # the 393k weights (1/64 > min_weight) would be kept without the max_edges cap.
    pattern = np.zeros((1, n_heads, n, n), np.float32)
    rng = np.random.default_rng(5)
    for h in range(n_heads):
        cols = rng.integers(0, n, size=(n, 64))
        np.put_along_axis(pattern[0, h], cols, 1.0, axis=-1)
    pattern /= pattern.sum(-1, keepdims=True)
    view = build_head_view(Block("encoder", pattern, seq, seq, False), layers=0)
    size = len(view.html.encode("utf-8"))
    assert size <= 3 * 1024 * 1024
    assert view.n_edges <= 250_000 and view.n_possible == n_heads * n * n
    data = payload(view.html)
    layer = data["layers"][0]
    shown = sum(1 for w in np.frombuffer(base64.b64decode(layer["weights"]), np.uint8)
                if w >= round(layer["threshold"] * 255))
    assert 0 < shown <= 25_000                          # the first draw stays fast


# ------------------------------------------------------------------ page wiring (AppTest)
def _view_payload(at) -> dict:
    frames = at.get("iframe")
    assert len(frames) == 1
    return payload(frames[0].proto.srcdoc)


def _qp(at) -> dict:
    return {k: (v[0] if isinstance(v, list) else v) for k, v in at.query_params.items()}


def test_page_draws_the_url_layer_and_head(app_test):
    at = app_test("pages/head_view.py", text="The cat sat on the mat.", layer=2, head=3)
    assert not at.exception
    data = _view_payload(at)
    assert [layer["layer"] for layer in data["layers"]] == [2]      # one layer per page load
    assert data["heads"] == [3] and len(data["colors"]) == 12
    assert data["queries"]["labels"][:3] == ["[CLS]", "the", "cat"]
    assert not at.get("button_group")                               # no pair, no slice picker
    at.selectbox(key="w_layer").select("5").run()
    assert [layer["layer"] for layer in _view_payload(at)["layers"]] == [5]
    assert _qp(at)["layer"] == "5"


def test_page_pair_slice_from_url(app_test):
    at = app_test("pages/head_view.py", text="The cat sat.", pair="It was warm.", slice="B->A")
    assert not at.exception
    data = _view_payload(at)
    assert data["pair"] == "B->A"
    assert "warm" in data["queries"]["labels"] and "cat" not in data["queries"]["labels"]
    assert "cat" in data["keys"]["labels"] and set(data["queries"]["segment"]) == {1}
    mass = at.select_slider(key="w_mass")
    mass.set_value("50%").run()
    assert _qp(at)["mass"] == "50%" and not at.exception


def test_page_cross_attention_of_an_encoder_decoder(app_test, tiny_models):
    at = app_test("pages/head_view.py", text="the cat sat on the mat", target="die katze",
                  model=tiny_models["encoder-decoder"], kind="cross")
    assert not at.exception
    data = _view_payload(at)
    assert data["kind"] == "cross"
    assert "katze" in data["queries"]["labels"] and "cat" in data["keys"]["labels"]
