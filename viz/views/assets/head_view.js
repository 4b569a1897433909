// Head view of viz/views/head_view.py: draws the edges packed in the #hv-data JSON element on a canvas.
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

  // Geometry (CSS pixels). Mirrors _row_height() in viz/views/head_view.py.
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
    var sw = document.createElement("span"); sw.className = "sw";
    b.appendChild(sw); b.appendChild(document.createTextNode(D.headLabels ? D.headLabels[h] : "head " + h));
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
  // Head colours for the theme on <html> (theme.js may switch it): the legend and the lines.
  var page = document.documentElement, colors = D.colors, rgb = [];
  function useTheme() {
    colors = page.getAttribute("data-ae-theme") === "dark" && D.colorsDark ? D.colorsDark : D.colors;
    rgb = colors.map(function (c) { return [1, 3, 5].map(function (o) { return parseInt(c.substr(o, 2), 16); }); });
    headEls.forEach(function (el, h) { el.firstChild.style.background = colors[h]; });
  }
  useTheme();
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
      var w = 19 + m.measureText(D.headLabels ? D.headLabels[h] : "head " + h).width;
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
    var ink = themeColour(page, "fg"), mark = themeColour(page, "mark");
    x.fillStyle = themeColour(page, "bg"); x.fillRect(0, 0, W, Ht);
    x.fillStyle = ink; x.font = "600 12px system-ui, sans-serif"; x.textBaseline = "middle"; x.textAlign = "left";
    x.fillText((D.title ? D.title + " \u2014 " : "") + "layer " + layers[state.layer].layer, pad, pad + 8);
    x.font = "11px system-ui, sans-serif";
    placed.forEach(function (p) {
      var y = pad + 24 + p[2];
      x.fillStyle = colors[p[0]]; x.fillRect(p[1], y - 5, 10, 10);
      x.fillStyle = ink; x.fillText(D.headLabels ? D.headLabels[p[0]] : "head " + p[0], p[1] + 13, y);
    });
    var top = pad + head;
    x.font = "12px system-ui, sans-serif";
    function fit(t, w) { if (x.measureText(t).width <= w) return t; while (t.length > 1 && x.measureText(t + "\u2026").width > w) t = t.slice(0, -1); return t + "\u2026"; }
    var f = focusToken();
    x.textAlign = "right";
    for (var i = 0; i < nQ; i++) { x.fillStyle = f && f.side === "q" && f.i === i ? mark : ink; x.fillText(fit(Q.labels[i], lw - 8), pad + lw - 4, top + yOf(i)); }
    x.textAlign = "left";
    for (var j = 0; j < nK; j++) { x.fillStyle = f && f.side === "k" && f.i === j ? mark : ink; x.fillText(fit(K.labels[j], rw - 8), pad + lw + cw + 4, top + yOf(j)); }
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
  // Streamlit's light or dark, live (theme.js): new colours, then a full repaint.
  followTheme(page, function () { useTheme(); baseKey = ""; render(); });
  root.dataset.ready = "1";
})();
