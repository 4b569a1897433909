"""Head view: one attention layer as lines between two token columns, as a standalone HTML page.

This module owns the pure builder behind the head view page (bertviz's head view, rebuilt to
stay small and fast at 512 tokens and to work offline):

- :func:`pair_slice` picks the query/key positions of a sentence-pair slice (all, A->A, ...);
- :func:`prune_edges` keeps the (head, query_pos, key_pos) edges worth drawing and quantises
  their weights to uint8;
- :func:`head_colors` gives one distinguishable colour per head;
- :func:`build_head_view` turns a :class:`~viz.result.Block` into a self-contained HTML string
  (inline vanilla JS and CSS, no CDN) that draws the edges on a canvas.

Why it is built this way: bertviz ships every weight of every layer as JSON floats (870 MB at
512 tokens on a 6x12 model). We send the layers asked for (the page sends one), drop faint
edges, and pack the rest as base64 uint16 key positions plus uint8 weights: about 4 bytes per
edge instead of ~20 bytes per weight.
"""
from __future__ import annotations

import base64
import colorsys
import html
import json
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from viz.result import Block, TokenSeq

PAIR_SLICES = ("all", "A->A", "A->B", "B->A", "B->B")

# Greedy max-min CIE-Lab distance picks from an sRGB grid restricted to lightness 30..70, so
# every colour reads on white and the first 12 are >= 46 delta-E apart (bertviz repeats its
# colours after 10 heads).
_PALETTE = (
    "#2277bb", "#ff0000", "#00bb00", "#0000ff", "#ee00aa", "#664411", "#55bb99", "#bbaa00",
    "#ee8899", "#6644cc", "#005500", "#dd11ff", "#dd7722", "#990022", "#225555", "#883377",
    "#bbaa77", "#bb99ff", "#99aabb", "#ff3377",
)

DEFAULT_MAX_EDGES = 250_000   # per layer: ~1 MB of base64 edges, well under the 3 MB budget
# Lines shown before the user lowers the "hide below" slider. Chromium without a GPU
# rasterises ~25k long anti-aliased lines per 0.1-0.2 s; the faint ones this hides have an
# opacity (= weight) of a few percent and are nearly invisible anyway.
DEFAULT_DRAW_BUDGET = 25_000


def head_colors(n_heads: int) -> tuple[str, ...]:
    """One ``#rrggbb`` colour per head; the palette first, then golden-angle hues."""
    colors = list(_PALETTE[:n_heads])
    i = 0
    while len(colors) < n_heads:
        # Beyond 20 heads no palette stays far apart; vary hue and lightness so neighbours
        # at least differ, and skip exact repeats.
        hue = (i * 0.618033988749895) % 1.0
        light = (0.38, 0.52, 0.30)[i % 3]
        r, g, b = colorsys.hls_to_rgb(hue, light, 0.85)
        c = "#%02x%02x%02x" % (round(r * 255), round(g * 255), round(b * 255))
        if c not in colors:
            colors.append(c)
        i += 1
    return tuple(colors)


def pair_slice(queries: TokenSeq, keys: TokenSeq, which: str = "all") -> tuple[np.ndarray, np.ndarray]:
    """Query and key positions of a sentence-pair slice.

    ``"A->B"`` means queries from the first text (segment 0) attending to keys of the second
    text (segment 1). Raises ``ValueError`` when the slice is empty (e.g. B without a pair).
    """
    if which not in PAIR_SLICES:
        raise ValueError(f"unknown slice {which!r}; choose from {', '.join(PAIR_SLICES)}")
    q_all = np.arange(len(queries))
    k_all = np.arange(len(keys))
    if which == "all":
        return q_all, k_all
    seg = {"A": 0, "B": 1}
    q_seg, k_seg = which.split("->")
    q_idx = q_all[np.asarray(queries.segment_ids) == seg[q_seg]]
    k_idx = k_all[np.asarray(keys.segment_ids) == seg[k_seg]]
    if len(q_idx) == 0 or len(k_idx) == 0:
        raise ValueError(f"slice {which} is empty: this input has no second sentence")
    return q_idx, k_idx


@dataclass(frozen=True)
class Edges:
    """The kept edges of one layer, sorted by (head, query_pos, key_pos)."""

    head: np.ndarray        # (E,) int
    query_pos: np.ndarray   # (E,) int, index into the (sliced) query axis
    key_pos: np.ndarray     # (E,) int, index into the (sliced) key axis
    weight: np.ndarray      # (E,) uint8, round(pattern * 255), never 0
    n_possible: int         # n_heads * n_queries * n_keys
    kept_mass: float        # share of the total attention weight the kept edges carry

    def __len__(self) -> int:
        return len(self.weight)


def prune_edges(pattern: np.ndarray, *, min_weight: float = 0.01, top_mass: float | None = None,
                max_edges: int | None = DEFAULT_MAX_EDGES) -> Edges:
    """Keep the edges of ``pattern`` (n_heads, query_pos, key_pos) worth drawing.

    An edge is kept when its weight is >= ``min_weight``, when it is among the strongest
    edges of its row that together reach ``top_mass`` of the row's weight (if given), and
    when it is among the ``max_edges`` strongest overall (if given): the last rule bounds the
    bytes whatever the input. Weights are quantised to uint8 (1/255 steps); edges that round
    to 0 are dropped.
    """
    p = np.asarray(pattern, dtype=np.float32)
    if p.ndim != 3:
        raise ValueError(f"pattern must be (n_heads, query_pos, key_pos), got shape {p.shape}")
    # Quantise first so the kept set and the sent weights agree exactly.
    q8 = np.rint(np.clip(p, 0.0, 1.0) * 255.0).astype(np.uint8)
    keep = q8 >= max(1, int(np.ceil(min_weight * 255.0 - 1e-6)))
    if top_mass is not None and top_mass < 1.0:
        order = np.argsort(-p, axis=-1, kind="stable")            # (H, Tq, Tk)
        srt = np.take_along_axis(p, order, axis=-1)
        before = np.cumsum(srt, axis=-1) - srt                    # mass of stronger edges
        row_total = srt.sum(axis=-1, keepdims=True)
        in_mass = before < top_mass * row_total                   # always keeps the strongest
        mass_keep = np.zeros_like(keep)
        np.put_along_axis(mass_keep, order, in_mass, axis=-1)
        keep &= mass_keep
    flat = np.flatnonzero(keep)
    if max_edges is not None and len(flat) > max_edges:
        w = q8.ravel()[flat]
        top = np.argpartition(-w.astype(np.int16), max_edges - 1)[:max_edges]
        flat = np.sort(flat[top])
    head, query_pos, key_pos = np.unravel_index(flat, p.shape)
    weight = q8.ravel()[flat]
    total = float(p.sum())
    kept_mass = float(p.ravel()[flat].sum()) / total if total > 0 else 0.0
    return Edges(head=head, query_pos=query_pos, key_pos=key_pos, weight=weight,
                 n_possible=int(p.size), kept_mass=kept_mass)


def auto_threshold(edges: Edges, *, budget: int = DEFAULT_DRAW_BUDGET, floor: float = 0.0) -> float:
    """The smallest weight threshold (a multiple of 1/255, >= ``floor``) that shows at most
    ``budget`` of ``edges``; the strongest edges always stay."""
    hist = np.bincount(edges.weight, minlength=256)            # edges per quantised weight
    shown_at = np.cumsum(hist[::-1])[::-1]                     # shown_at[t] = #edges with w8 >= t
    t = max(1, int(np.ceil(floor * 255.0 - 1e-6)))
    while t < 255 and shown_at[t] > budget:
        t += 1
    return t / 255.0


@dataclass(frozen=True)
class HeadView:
    """A built head view: the HTML plus what the page tells the user about it."""

    html: str
    n_edges: int            # edges sent, summed over the layers sent
    n_possible: int         # edges there are, summed over the layers sent
    kept_mass: float        # mean over layers of the share of attention weight kept
    height: int             # a good iframe height in CSS pixels (the view scrolls inside)


def script_json(obj) -> str:
    """JSON that is safe inside ``<script type="application/json">``.

    ``<``, ``>`` and ``&`` become ``\\u003c`` etc. so no token can close the script element or
    open a comment, and U+2028/U+2029 are escaped for old JS parsers.
    """
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def _layer_payload(layer: int, edges: Edges, n_heads: int, n_queries: int, n_keys: int,
                   threshold: float) -> dict:
    # Row counts make head and query_pos implicit (edges are sorted by head, then query).
    counts = np.bincount(edges.head * n_queries + edges.query_pos,
                         minlength=n_heads * n_queries).astype("<u4")
    key_dtype = "<u2" if n_keys <= 0xFFFF else "<u4"
    return {
        "layer": int(layer),
        "nEdges": len(edges),
        "keptMass": round(edges.kept_mass, 4),
        "threshold": round(threshold, 6),
        "counts": _b64(counts),
        "keys": _b64(edges.key_pos.astype(key_dtype)),
        "keyBytes": 2 if key_dtype == "<u2" else 4,
        "weights": _b64(edges.weight),
    }


def build_head_view(block: Block, *, layers: int | Sequence[int] = 0, pair: str = "all",
                    heads: Sequence[int] | None = None, min_weight: float = 0.01,
                    top_mass: float | None = None, max_edges: int | None = DEFAULT_MAX_EDGES,
                    draw_budget: int = DEFAULT_DRAW_BUDGET, title: str = "") -> HeadView:
    """The head view of ``block`` for ``layers`` as a standalone HTML page.

    ``pair`` is one of :data:`PAIR_SLICES`; ``heads`` are the heads shown at first (default
    all; the user toggles them in the view). Pruning options: see :func:`prune_edges`; of the
    edges sent, the view first hides the faintest so that at most ``draw_budget`` lines are
    drawn (its "hide below" slider starts there and goes down to ``min_weight``).
    """
    layer_list = [layers] if isinstance(layers, (int, np.integer)) else list(layers)
    if not layer_list:
        raise ValueError("give at least one layer")
    for layer in layer_list:
        if not 0 <= layer < block.n_layers:
            raise ValueError(f"layer {layer} out of range (this block has {block.n_layers})")
    n_heads = block.n_heads
    shown = list(range(n_heads)) if heads is None else sorted({int(h) for h in heads})
    if any(not 0 <= h < n_heads for h in shown):
        raise ValueError(f"heads must be in 0..{n_heads - 1}")
    q_idx, k_idx = pair_slice(block.queries, block.keys, pair)

    payloads, n_edges, n_possible, masses = [], 0, 0, []
    for layer in layer_list:
        # (n_heads, query_pos, key_pos) for the slice
        pattern = block.pattern[layer][:, q_idx][:, :, k_idx]
        edges = prune_edges(pattern, min_weight=min_weight, top_mass=top_mass, max_edges=max_edges)
        threshold = auto_threshold(edges, budget=draw_budget, floor=min_weight)
        payloads.append(_layer_payload(layer, edges, n_heads, len(q_idx), len(k_idx), threshold))
        n_edges += len(edges)
        n_possible += edges.n_possible
        masses.append(edges.kept_mass)

    def side(seq: TokenSeq, idx: np.ndarray) -> dict:
        return {
            "labels": [seq.labels[i] for i in idx],
            "tokens": [seq.tokens[i] for i in idx],
            "pos": [int(i) for i in idx],
            "segment": [int(seq.segment_ids[i]) for i in idx],
        }

    data = {
        "title": title,
        "kind": block.kind,
        "pair": pair,
        "causal": bool(block.causal),
        "nHeads": n_heads,
        "colors": list(head_colors(n_heads)),
        "heads": shown,
        "minWeight": float(min_weight),
        "queries": side(block.queries, q_idx),
        "keys": side(block.keys, k_idx),
        "layers": payloads,
    }
    rows = max(len(q_idx), len(k_idx))
    row_h = _row_height(rows)
    height = int(min(760, 110 + rows * row_h + 24))
    page = (_TEMPLATE.replace("__TITLE__", html.escape(title or "Head view"))
            .replace("__CSS__", _CSS).replace("__JS__", _JS)
            .replace("__DATA__", script_json(data)))
    return HeadView(html=page, n_edges=n_edges, n_possible=n_possible,
                    kept_mass=float(np.mean(masses)), height=height)


def _row_height(rows: int) -> int:
    # Mirrors rowHeight() in the JS: roomy for short inputs, compact for long ones.
    return 20 if rows <= 64 else (17 if rows <= 160 else 15)


_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>__CSS__</style>
</head><body>
<div id="hv" class="hv" data-ready="0">
  <div class="hv-bar">
    <div class="hv-row">
      <span class="hv-title" id="hv-title"></span>
      <label class="hv-ctl" id="hv-layer-wrap" hidden>layer <select id="hv-layer"></select></label>
      <label class="hv-ctl">hide below <input id="hv-thr" type="range" min="0" max="0.5" step="0.005">
        <span id="hv-thr-val"></span></label>
      <button type="button" id="hv-all">all heads</button>
      <button type="button" id="hv-none">no heads</button>
      <button type="button" id="hv-png" title="Save the view as a PNG image">PNG</button>
    </div>
    <div class="hv-legend" id="hv-legend" title="click: show/hide a head, double-click: show only that head"></div>
    <div class="hv-status" id="hv-status" aria-live="polite"></div>
  </div>
  <div class="hv-scroll" id="hv-scroll">
    <div class="hv-grid" id="hv-grid">
      <div class="hv-col hv-left" id="hv-left"></div>
      <div class="hv-canvas-wrap" id="hv-wrap">
        <div class="hv-sticky" id="hv-sticky"><canvas id="hv-base"></canvas><canvas id="hv-focus"></canvas></div>
      </div>
      <div class="hv-col hv-right" id="hv-right"></div>
    </div>
  </div>
</div>
<script type="application/json" id="hv-data">__DATA__</script>
<script>__JS__</script>
</body></html>
"""

_CSS = r"""
html,body{margin:0;padding:0;height:100%;background:#fff;color:#222;
  font:12px/1.3 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",sans-serif}
.hv{display:flex;flex-direction:column;height:100vh;box-sizing:border-box}
.hv-bar{flex:0 0 auto;padding:4px 6px;border-bottom:1px solid #e4e4e4;background:#fafafa}
.hv-row{display:flex;flex-wrap:wrap;gap:8px;align-items:center}
.hv-title{font-weight:600}
.hv-ctl{display:inline-flex;align-items:center;gap:4px}
.hv-ctl[hidden]{display:none}
.hv-ctl input[type=range]{width:110px}
button{font:inherit;padding:1px 7px;border:1px solid #bbb;border-radius:4px;background:#fff;cursor:pointer}
button:hover{background:#f0f0f0}
.hv-legend{display:flex;flex-wrap:wrap;gap:3px;margin-top:4px}
.hv-head{display:inline-flex;align-items:center;gap:3px;padding:0 5px 0 3px;border:1px solid #ccc;
  border-radius:3px;cursor:pointer;user-select:none;background:#fff;font-variant-numeric:tabular-nums}
.hv-head .sw{width:11px;height:11px;border-radius:2px;display:inline-block}
.hv-head.off{opacity:.35}
.hv-head.off .sw{background:#fff !important;border:1px solid #999;box-sizing:border-box}
.hv-status{min-height:15px;margin-top:3px;color:#555;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.hv-scroll{flex:1 1 auto;overflow:auto;position:relative}
.hv-grid{display:flex;align-items:flex-start;padding:6px 4px 10px 4px;width:max-content}
.hv-col{display:flex;flex-direction:column;flex:0 0 auto}
.hv-left{text-align:right}
.hv-tok{white-space:pre;overflow:hidden;text-overflow:ellipsis;padding:0 4px;cursor:default;border-radius:3px;
  box-sizing:border-box}
.hv-tok.seg1{color:#7a3e9d}
.hv-tok.special{color:#888}
.hv-tok.hot{background:#ffe9a8;color:#000}
.hv-canvas-wrap{position:relative}
.hv-sticky{position:sticky;top:0;overflow:hidden}
.hv-sticky canvas{position:absolute;left:0;top:0}
#hv-focus{pointer-events:none}
"""


_JS = r"""
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("hv-data").textContent);
  var root = document.getElementById("hv");
  var Q = D.queries, K = D.keys, H = D.nHeads;
  var nQ = Q.labels.length, nK = K.labels.length;
  var $ = function (id) { return document.getElementById(id); };
  function range(n) { return Array.from({length: n}, function (_, i) { return i; }); }

  function b64bytes(s) {
    var bin = atob(s), n = bin.length, out = new Uint8Array(n);
    for (var i = 0; i < n; i++) out[i] = bin.charCodeAt(i);
    return out;
  }
  // One decoded layer: CSR rows (head-major, then query), key positions, uint8 weights.
  function decode(L) {
    var counts = new Uint32Array(b64bytes(L.counts).buffer);
    var kb = b64bytes(L.keys).buffer;
    var keys = L.keyBytes === 2 ? new Uint16Array(kb) : new Uint32Array(kb);
    var w = b64bytes(L.weights);
    var start = new Uint32Array(H * nQ + 1);
    for (var r = 0; r < H * nQ; r++) start[r + 1] = start[r] + counts[r];
    return {layer: L.layer, start: start, keys: keys, w: w, n: w.length, keptMass: L.keptMass, threshold: L.threshold};
  }
  var layers = D.layers.map(decode);

  // Geometry (CSS pixels). Mirrors _row_height() in headview.py.
  var rows = Math.max(nQ, nK);
  var rowH = rows <= 64 ? 20 : (rows <= 160 ? 17 : 15);
  var boxW = Math.max(3, Math.min(8, Math.floor(96 / H)));
  var boxArea = H * boxW + 6;
  var linesW = 260, cw = 0, ch = rows * rowH, x0 = boxArea, x1 = 0;
  var dpr = Math.min(window.devicePixelRatio || 1, 2);
  var lineW = rows > 128 ? 1 : 1.5;
  function yOf(i) { return (i + 0.5) * rowH; }

  var state = {layer: 0, heads: new Set(D.heads), thr: layers[0].threshold, hover: null, pinned: null};

  // ---- DOM -----------------------------------------------------------------------------
  $("hv-title").textContent = D.title || "";
  function makeCol(el, side, n) {
    var frag = document.createDocumentFragment();
    for (var i = 0; i < n; i++) {
      var d = document.createElement("div");
      d.className = "hv-tok" + (side.segment[i] === 1 ? " seg1" : "");
      d.style.height = d.style.lineHeight = rowH + "px";
      d.textContent = side.labels[i];               // text, never HTML
      d.title = side.tokens[i] + "  (position " + side.pos[i] + ")";
      d.dataset.i = i;
      frag.appendChild(d);
    }
    el.appendChild(frag);
    return Array.prototype.slice.call(el.children);
  }
  var leftEls = makeCol($("hv-left"), Q, nQ), rightEls = makeCol($("hv-right"), K, nK);
  var scroller = $("hv-scroll"), wrap = $("hv-wrap"), sticky = $("hv-sticky");
  var base = $("hv-base"), focus = $("hv-focus");
  var bctx = base.getContext("2d"), fctx = focus.getContext("2d");
  // Label columns as wide as the longest label (capped); the lines take the width left over.
  function labelWidth(labels) {
    bctx.font = "12px system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";
    var m = 0;
    for (var i = 0; i < labels.length; i++) m = Math.max(m, bctx.measureText(labels[i]).width);
    return Math.ceil(Math.min(160, Math.max(36, m + 12)));
  }
  var leftW = labelWidth(Q.labels), rightW = labelWidth(K.labels);
  $("hv-left").style.width = leftW + "px"; $("hv-right").style.width = rightW + "px";
  function layout() {
    var avail = document.documentElement.clientWidth - leftW - rightW - 2 * boxArea - 28;
    linesW = Math.max(140, Math.min(rows > 64 ? 440 : 360, avail));
    cw = boxArea * 2 + linesW; x1 = boxArea + linesW;
    wrap.style.width = cw + "px"; wrap.style.height = ch + "px";
    sticky.style.width = cw + "px";
  }
  layout();

  // Only the visible window of the (possibly 8000 px tall) line area is a canvas: software
  // rasterisation cost grows with the line pixels drawn, so we redraw that window on scroll.
  var viewH = 0, viewW = 0;
  function sizeCanvases() {
    var h = Math.min(ch, scroller.clientHeight || 800);
    if (h === viewH && cw === viewW) return false;
    viewH = h; viewW = cw;
    sticky.style.height = h + "px";
    [base, focus].forEach(function (c) {
      c.width = Math.round(cw * dpr); c.height = Math.round(h * dpr);
      c.style.width = cw + "px"; c.style.height = h + "px";
    });
    return true;
  }
  function windowTop() { return Math.round(sticky.getBoundingClientRect().top - wrap.getBoundingClientRect().top); }

  var legend = $("hv-legend"), headEls = [];
  for (var h = 0; h < H; h++) {
    var b = document.createElement("span");
    b.className = "hv-head"; b.dataset.head = h; b.setAttribute("role", "button"); b.tabIndex = 0;
    var sw = document.createElement("span"); sw.className = "sw"; sw.style.background = D.colors[h];
    b.appendChild(sw); b.appendChild(document.createTextNode("head " + h));
    legend.appendChild(b); headEls.push(b);
  }
  if (layers.length > 1) {
    $("hv-layer-wrap").hidden = false;
    layers.forEach(function (L, i) {
      var o = document.createElement("option"); o.value = i; o.textContent = L.layer; $("hv-layer").appendChild(o);
    });
  }
  var thr = $("hv-thr");
  thr.min = Math.max(0, D.minWeight); thr.max = Math.max(0.5, state.thr); thr.step = 1 / 255; thr.value = state.thr;

  // ---- drawing -------------------------------------------------------------------------
  var rgb = D.colors.map(function (c) { return [1, 3, 5].map(function (o) { return parseInt(c.substr(o, 2), 16); }); });
  function minW8() { return Math.max(1, Math.round(state.thr * 255)); }
  var NB = 32;   // opacity buckets: one stroke() per (head, bucket) instead of one per line

  // fn(head, query, key, weight8) for each visible edge, optionally only one token's edges.
  function each(L, only, fn) {
    var t = minW8();
    for (var h = 0; h < H; h++) {
      if (!state.heads.has(h)) continue;
      var q0 = 0, q1 = nQ;
      if (only && only.side === "q") { q0 = only.i; q1 = only.i + 1; }
      for (var q = q0; q < q1; q++) {
        var r = h * nQ + q;
        for (var e = L.start[r], e1 = L.start[r + 1]; e < e1; e++) {
          var w = L.w[e];
          if (w < t) continue;
          if (only && only.side === "k" && L.keys[e] !== only.i) continue;
          fn(h, q, L.keys[e], w);
        }
      }
    }
  }
  // Stroke the visible edges that cross [top, top + height) onto ctx (already transformed).
  function strokeEdges(ctx, only, top, height) {
    var L = layers[state.layer], paths = [], n = 0, lo = top - rowH, hi = top + height + rowH;
    ctx.lineWidth = lineW;
    each(L, only, function (h, q, k, w) {
      var ya = yOf(q), yb = yOf(k);
      if ((ya < lo && yb < lo) || (ya > hi && yb > hi)) return;
      var i = Math.min(NB - 1, (w * NB) >> 8) * H + h, p = paths[i] || (paths[i] = new Path2D());
      p.moveTo(x0, ya); p.lineTo(x1, yb); n++;
    });
    // Faint buckets first, so strong lines end up on top whatever their head.
    for (var i = 0; i < NB * H; i++) if (paths[i]) {
      var c = rgb[i % H], b = Math.floor(i / H);
      ctx.strokeStyle = "rgba(" + c[0] + "," + c[1] + "," + c[2] + "," + ((b + 0.5) / NB).toFixed(3) + ")";
      ctx.stroke(paths[i]);
    }
    return n;
  }
  // Per-head weight boxes beside the tokens on the other side of the focused token.
  function drawBoxes(ctx, only, top, height) {
    var xb = only.side === "q" ? x1 + 4 : 2;
    each(layers[state.layer], only, function (h, q, k, w) {
      var row = only.side === "q" ? k : q, y = row * rowH;
      if (y + rowH < top || y > top + height) return;
      var c = rgb[h];
      ctx.fillStyle = "rgba(" + c[0] + "," + c[1] + "," + c[2] + "," + (w / 255).toFixed(3) + ")";
      ctx.fillRect(xb + h * boxW, y + 2, boxW - 1, rowH - 4);
    });
  }
  function prepare(ctx, top) {
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, ctx.canvas.width, ctx.canvas.height);
    ctx.setTransform(dpr, 0, 0, dpr, 0, -top * dpr);
  }
  function countVisible(only) { var n = 0; each(layers[state.layer], only, function () { n++; }); return n; }
  function focusToken() { return state.pinned || state.hover; }

  var baseKey = "", frame = 0;
  function paint() {
    frame = 0;
    var t0 = performance.now(), top = windowTop(), f = focusToken(), drawn;
    if (f) {
      prepare(fctx, top);
      drawn = strokeEdges(fctx, f, top, viewH);
      drawBoxes(fctx, f, top, viewH);
      focus.style.visibility = "visible"; base.style.visibility = "hidden";
    } else {
      var key = [state.layer, root.dataset.heads, state.thr, top, viewH, viewW].join("|");
      if (key !== baseKey) { prepare(bctx, top); root.dataset.windowEdges = strokeEdges(bctx, null, top, viewH); baseKey = key; }
      focus.style.visibility = "hidden"; base.style.visibility = "visible";
    }
    if (drawn !== undefined) root.dataset.windowEdges = drawn;
    root.dataset.drawMs = (performance.now() - t0).toFixed(1);
    root.dataset.paints = (+root.dataset.paints || 0) + 1;
  }
  function schedule() { if (!frame) frame = requestAnimationFrame(paint); }

  // State -> DOM (labels, legend, status, data-* attributes for tests), then a repaint.
  function render() {
    var f = focusToken(), L = layers[state.layer];
    leftEls.concat(rightEls).forEach(function (e) { e.classList.remove("hot"); });
    if (f) (f.side === "q" ? leftEls : rightEls)[f.i].classList.add("hot");
    headEls.forEach(function (e, h) { e.classList.toggle("off", !state.heads.has(h)); });
    $("hv-thr-val").textContent = state.thr.toFixed(3);
    var visible = countVisible(f);
    root.dataset.layer = L.layer;
    root.dataset.heads = Array.from(state.heads).sort(function (a, b) { return a - b; }).join(",");
    root.dataset.threshold = state.thr.toFixed(4);
    root.dataset.visibleEdges = visible;
    root.dataset.hoverSide = f ? f.side : "";
    root.dataset.hoverPos = f ? f.i : "";
    var msg = visible.toLocaleString() + " lines shown of " + L.n.toLocaleString() + " sent (" +
      Math.round(100 * L.keptMass) + "% of the attention weight); hover a token to isolate its lines";
    if (f) {
      var S = f.side === "q" ? Q : K;
      msg = (f.side === "q" ? "query " : "key ") + JSON.stringify(S.labels[f.i]) + " at position " + S.pos[f.i] +
        ": " + visible.toLocaleString() + " lines; boxes show each head's weight" +
        (state.pinned ? " \u2014 click the token again to release" : "");
    }
    $("hv-status").textContent = msg;
    schedule();
  }

  // ---- interaction ---------------------------------------------------------------------
  function tokenFrom(ev, side) {
    var el = ev.target.closest ? ev.target.closest(".hv-tok") : null;
    return el ? {side: side, i: +el.dataset.i} : null;
  }
  [["hv-left", "q"], ["hv-right", "k"]].forEach(function (p) {
    var col = $(p[0]);
    col.addEventListener("mouseover", function (ev) {
      var t = tokenFrom(ev, p[1]);
      if (t && !(state.hover && state.hover.side === t.side && state.hover.i === t.i)) { state.hover = t; render(); }
    });
    col.addEventListener("mouseleave", function () { state.hover = null; render(); });
    col.addEventListener("click", function (ev) {   // touch screens: tap to pin, tap again to release
      var t = tokenFrom(ev, p[1]); if (!t) return;
      var pin = state.pinned;
      state.pinned = pin && pin.side === t.side && pin.i === t.i ? null : t;
      render();
    });
  });
  legend.addEventListener("click", function (ev) {
    var el = ev.target.closest(".hv-head"); if (!el) return;
    var h = +el.dataset.head;
    if (state.heads.has(h)) state.heads.delete(h); else state.heads.add(h);
    render();
  });
  legend.addEventListener("dblclick", function (ev) {
    var el = ev.target.closest(".hv-head"); if (!el) return;
    var h = +el.dataset.head;
    // The two clicks before a dblclick cancel out, so the set is as it was: solo h, or
    // bring every head back when h is already alone.
    var solo = state.heads.size === 1 && state.heads.has(h);
    state.heads = solo ? new Set(range(H)) : new Set([h]);
    render();
  });
  legend.addEventListener("keydown", function (ev) {
    if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); ev.target.click(); }
  });
  $("hv-all").onclick = function () { state.heads = new Set(range(H)); render(); };
  $("hv-none").onclick = function () { state.heads = new Set(); render(); };
  thr.addEventListener("input", function () { state.thr = +thr.value; render(); });
  $("hv-layer").addEventListener("change", function () { state.layer = +this.value; render(); });
  scroller.addEventListener("scroll", schedule, {passive: true});
  window.addEventListener("resize", function () { layout(); if (sizeCanvases()) baseKey = ""; schedule(); });

  // PNG export of the whole view (all rows), labels drawn as text.
  function exportPNG() {
    var lw = $("hv-left").offsetWidth, rw = $("hv-right").offsetWidth, pad = 8;
    var W = lw + cw + rw + 2 * pad;
    // Heading, then a legend of the heads shown (wrapped to the image width) so the colours
    // in the image can be read on their own.
    var m = document.createElement("canvas").getContext("2d");
    m.font = "11px system-ui, sans-serif";
    var items = [], lx = pad, ly = 0;
    state.heads.forEach(function (h) { items.push(h); });
    items.sort(function (a, b) { return a - b; });
    var placed = items.map(function (h) {
      var w = 19 + m.measureText("head " + h).width;
      if (lx + w > W - pad && lx > pad) { lx = pad; ly += 16; }
      var at = [h, lx, ly]; lx += w; return at;
    });
    var head = 24 + (items.length ? ly + 18 : 0);
    var Ht = ch + 2 * pad + head;
    var s = Math.max(0.25, Math.min(dpr, 16000 / Ht));   // stay inside canvas size limits
    var c = document.createElement("canvas");
    c.width = Math.round(W * s); c.height = Math.round(Ht * s);
    var x = c.getContext("2d");
    x.setTransform(s, 0, 0, s, 0, 0);
    x.fillStyle = "#fff"; x.fillRect(0, 0, W, Ht);
    x.fillStyle = "#222"; x.font = "600 12px system-ui, sans-serif"; x.textBaseline = "middle"; x.textAlign = "left";
    x.fillText((D.title ? D.title + " \u2014 " : "") + "layer " + layers[state.layer].layer, pad, pad + 8);
    x.font = "11px system-ui, sans-serif";
    placed.forEach(function (p) {
      var y = pad + 24 + p[2];
      x.fillStyle = D.colors[p[0]]; x.fillRect(p[1], y - 5, 10, 10);
      x.fillStyle = "#222"; x.fillText("head " + p[0], p[1] + 13, y);
    });
    var top = pad + head;
    x.font = "12px system-ui, sans-serif";
    function fit(t, w) { if (x.measureText(t).width <= w) return t; while (t.length > 1 && x.measureText(t + "\u2026").width > w) t = t.slice(0, -1); return t + "\u2026"; }
    var f = focusToken();
    x.textAlign = "right";
    for (var i = 0; i < nQ; i++) { x.fillStyle = f && f.side === "q" && f.i === i ? "#b00" : "#222"; x.fillText(fit(Q.labels[i], lw - 8), pad + lw - 4, top + yOf(i)); }
    x.textAlign = "left";
    for (var j = 0; j < nK; j++) { x.fillStyle = f && f.side === "k" && f.i === j ? "#b00" : "#222"; x.fillText(fit(K.labels[j], rw - 8), pad + lw + cw + 4, top + yOf(j)); }
    x.setTransform(s, 0, 0, s, (pad + lw) * s, top * s);
    strokeEdges(x, f, 0, ch);
    if (f) drawBoxes(x, f, 0, ch);
    c.toBlob(function (blob) {
      var a = document.createElement("a");
      a.href = URL.createObjectURL(blob); a.download = "head_view_layer" + layers[state.layer].layer + ".png";
      document.body.appendChild(a); a.click(); a.remove();
      setTimeout(function () { URL.revokeObjectURL(a.href); }, 10000);
    }, "image/png");
  }
  $("hv-png").onclick = exportPNG;

  // A small API for tests and for people poking at the view from the console.
  window.headView = {
    state: state,
    hover: function (side, i) { state.hover = i === null ? null : {side: side, i: i}; render(); },
    visibleEdges: function () {
      var out = [];
      each(layers[state.layer], focusToken(), function (h, q, k, w) { out.push([h, q, k, w]); });
      return out;
    },
    setHeads: function (hs) { state.heads = new Set(hs); render(); },
    exportPNG: exportPNG
  };
  sizeCanvases();
  render();
  paint();
  root.dataset.ready = "1";
})();
"""
