// Canvas heatmap of viz/views/heatmap.py: the data comes from the #hm-data JSON element.
// The page keeps no state beyond the data and the hovered cell; everything is redrawn on resize.
// D.q0/D.k0 place the drawn window in the whole matrix; D.qs x D.ks positions make one drawn cell
// (1 x 1: exact weights; more: each block's largest weight, for inputs longer than the view draws).
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("hm-data").textContent);
  var raw = atob(D.z), bytes = new Uint8Array(raw.length);
  for (var b = 0; b < raw.length; b++) bytes[b] = raw.charCodeAt(b);
  var Z = new Float32Array(bytes.buffer);
  var F = D.font, FAMILY = "system-ui,-apple-system,'Segoe UI',Roboto,sans-serif";
  var root = document.getElementById("hm"), plot = document.getElementById("hm-plot");
  var over = document.getElementById("hm-over"), tip = document.getElementById("hm-tip");
  var L = null, cur = null, drag = null;
  var Q0 = D.q0 || 0, K0 = D.k0 || 0, QS = D.qs || 1, KS = D.ks || 1, EXACT = QS === 1 && KS === 1;
  var ZOOMED = D.whole === false;
  // Tick labels: the tokens; with a window, their positions too; with blocks, a block's first position.
  function ticks(labels, n, size, start) {
    var out = [];
    for (var i = 0; i < n; i++) {
      out.push(size === 1 ? (ZOOMED ? (start + i) + " " + labels[i] : labels[i])
                          : (start + i * size) + " " + labels[i * size]);
    }
    return out;
  }
  var QT = ticks(D.q, D.nq, QS, Q0), KT = ticks(D.k, D.nk, KS, K0);
  function span(labels, i, size, start) {             // positions [a, b] of drawn cell i, both ends included
    var a = i * size, b = Math.min(labels.length, a + size) - 1;
    return {a: start + a, b: start + b, first: a, last: b};
  }
  var LUT = null, MASKED = null, INK = null;     // the theme's colours, set by useTheme()
  function useTheme() {
    var theme = root.getAttribute("data-ae-theme") === "dark" ? "dark" : "light";
    LUT = D.luts[theme]; MASKED = themeRGB(root, "masked");
    INK = {bg: themeColour(root, "bg"), fg: themeColour(root, "fg"), accent: themeColour(root, "accent")};
  }
  useTheme();

  function weight(i, j) { return Z[i * D.nk + j]; }
  function colour(w) {
    if (!(w === w)) return MASKED;                     // NaN: the masked future
    var t = Math.max(0, Math.min(255, Math.round(w / D.zmax * 255))) * 3;
    return [LUT[t], LUT[t + 1], LUT[t + 2]];
  }
  function fit(ctx, s, px) {                          // long tokens end in an ellipsis
    if (ctx.measureText(s).width <= px) return s;
    while (s.length > 1 && ctx.measureText(s + "\u2026").width > px) s = s.slice(0, -1);
    return s + "\u2026";
  }
  function widest(ctx, labels, cap) {
    var m = 0;
    for (var i = 0; i < labels.length; i++) m = Math.max(m, ctx.measureText(labels[i]).width);
    return Math.min(m, cap);
  }
  function step(n, px) { return Math.max(1, Math.ceil(n / Math.max(1, Math.floor(px / (F + 3))))); }

  function layout(W, H) {
    var ctx = plot.getContext("2d");
    ctx.font = F + "px " + FAMILY;
    var cap = 14 * F, qw = widest(ctx, QT, cap), kw = widest(ctx, KT, cap);
    var top = 2.4 * F + 10, left = qw + 2 * F + 14, right = 6 * F + 24;
    var bottom = kw * 0.87 + 2.6 * F + 10;            // key labels turned by 60 degrees
    var pw = Math.max(40, W - left - right), ph = Math.max(40, H - top - bottom);
    return {W: W, H: H, top: top, left: left, pw: pw, ph: ph, cw: pw / D.nk, ch: ph / D.nq, cap: cap, kw: kw};
  }

  function cells() {                                  // one pixel per cell, scaled up unsmoothed
    var c = document.createElement("canvas");
    c.width = D.nk; c.height = D.nq;
    var x = c.getContext("2d"), img = x.createImageData(D.nk, D.nq), px = img.data;
    for (var i = 0; i < D.nq; i++) for (var j = 0; j < D.nk; j++) {
      var rgb = colour(weight(i, j)), o = (i * D.nk + j) * 4;
      px[o] = rgb[0]; px[o + 1] = rgb[1]; px[o + 2] = rgb[2]; px[o + 3] = 255;
    }
    x.putImageData(img, 0, 0);
    return c;
  }
  var CELLS = cells();
  function restyle() { useTheme(); CELLS = cells(); render(); }

  function label(v) { return v >= 0.1 ? v.toFixed(2) : v.toFixed(3); }

  function draw(ctx, l) {
    ctx.fillStyle = INK.bg; ctx.fillRect(0, 0, l.W, l.H);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(CELLS, l.left, l.top, l.pw, l.ph);
    ctx.fillStyle = INK.fg; ctx.textBaseline = "middle";
    if (D.title) {
      ctx.font = "600 " + (F + 2) + "px " + FAMILY; ctx.textAlign = "left";
      ctx.fillText(fit(ctx, D.title, l.W - (D.zoom && ZOOMED ? 170 : 60)), 8, 10 + 1.1 * F);
    }
    ctx.font = F + "px " + FAMILY;
    var si = step(D.nq, l.ph), sj = step(D.nk, l.pw), i, j;
    ctx.textAlign = "right";
    for (i = 0; i < D.nq; i += si) ctx.fillText(fit(ctx, QT[i], l.cap), l.left - 5, l.top + (i + 0.5) * l.ch);
    for (j = 0; j < D.nk; j += sj) {
      ctx.save();
      ctx.translate(l.left + (j + 0.5) * l.cw, l.top + l.ph + 5);
      ctx.rotate(-Math.PI / 3);
      ctx.fillText(fit(ctx, KT[j], l.cap), 0, 0);
      ctx.restore();
    }
    ctx.textAlign = "center";
    ctx.fillText(D.kAxis, l.left + l.pw / 2, l.top + l.ph + l.kw * 0.87 + 1.8 * F + 6);
    ctx.save(); ctx.translate(F, l.top + l.ph / 2); ctx.rotate(-Math.PI / 2);
    ctx.fillText(D.qAxis, 0, 0); ctx.restore();
    // colour bar: weight 0 at the bottom, the largest weight at the top
    var bx = l.left + l.pw + 14, bw = Math.max(10, F), n = LUT.length / 3;
    for (var s = 0; s < n; s++) {
      ctx.fillStyle = "rgb(" + LUT[3 * s] + "," + LUT[3 * s + 1] + "," + LUT[3 * s + 2] + ")";
      ctx.fillRect(bx, l.top + l.ph * (1 - (s + 1) / n), bw, l.ph / n + 0.5);
    }
    ctx.fillStyle = INK.fg; ctx.textAlign = "left";
    [0, 0.5, 1].forEach(function (f) { ctx.fillText(label(f * D.zmax), bx + bw + 4, l.top + l.ph * (1 - f)); });
    ctx.fillText("weight", bx, l.top - F);
  }

  function render() {
    var W = Math.max(200, root.clientWidth), H = D.height;
    var dpr = window.devicePixelRatio || 1;
    L = layout(W, H);
    [plot, over].forEach(function (c) {
      c.width = Math.round(W * dpr); c.height = Math.round(H * dpr);
      c.style.width = W + "px"; c.style.height = H + "px";
    });
    var ctx = plot.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    draw(ctx, L);
    focus(cur);
    root.dataset.drawn = "1";
  }

  // Hover, tap or arrow keys: outline the cell, its row and column, and say the weight.
  function focus(c) {
    cur = c;
    var x = over.getContext("2d"), dpr = window.devicePixelRatio || 1;
    x.setTransform(dpr, 0, 0, dpr, 0, 0);
    x.clearRect(0, 0, L.W, L.H);
    if (!c) { tip.hidden = true; root.removeAttribute("data-hover"); return; }
    x.strokeStyle = INK.accent; x.lineWidth = 1; x.globalAlpha = 0.9;
    x.strokeRect(L.left, L.top + c.i * L.ch, L.pw, L.ch);
    x.strokeRect(L.left + c.j * L.cw, L.top, L.cw, L.ph);
    x.globalAlpha = 1; x.lineWidth = 2;
    x.strokeRect(L.left + c.j * L.cw, L.top + c.i * L.ch, Math.max(L.cw, 2), Math.max(L.ch, 2));
    tip.textContent = tipText(c.i, c.j);
    tip.hidden = false;
    var tx = L.left + (c.j + 1) * L.cw + 12, ty = L.top + c.i * L.ch + 8;
    if (tx + tip.offsetWidth > L.W - 4) tx = Math.max(4, L.left + c.j * L.cw - tip.offsetWidth - 12);
    if (ty + tip.offsetHeight > L.H - 4) ty = Math.max(4, L.H - tip.offsetHeight - 4);
    tip.style.left = tx + "px"; tip.style.top = ty + "px";
    root.dataset.hover = c.i + "," + c.j;
  }
  function exactText(w) {                             // 4 decimals, more significant digits for faint weights
    return w >= 0.001 || w === 0 ? w.toFixed(4) : w.toPrecision(3);
  }
  function tipText(i, j) {
    var w = weight(i, j);
    if (EXACT) {
      return "query " + (Q0 + i) + " " + D.q[i] + "\nkey " + (K0 + j) + " " + D.k[j] + "\n" +
        (w === w ? "weight " + exactText(w) : "masked: a token cannot attend to later tokens");
    }
    var r = span(D.q, i, QS, Q0), c = span(D.k, j, KS, K0);
    return "queries " + r.a + "\u2013" + r.b + " (" + D.q[r.first] + " \u2026 " + D.q[r.last] + ")\n" +
      "keys " + c.a + "\u2013" + c.b + " (" + D.k[c.first] + " \u2026 " + D.k[c.last] + ")\n" +
      (w === w ? "largest weight " + w.toFixed(4) + " in this block of " + (r.b - r.a + 1) + " \u00d7 " +
                 (c.b - c.a + 1) : "masked: a token cannot attend to later tokens") +
      (D.zoom ? "\ndrag a box to zoom in and read exact weights" : "");
  }
  function cellAt(ev, clamp) {
    var r = plot.getBoundingClientRect(), x = ev.clientX - r.left - L.left, y = ev.clientY - r.top - L.top;
    if (clamp) { x = Math.max(0, Math.min(L.pw - 1e-6, x)); y = Math.max(0, Math.min(L.ph - 1e-6, y)); }
    if (x < 0 || y < 0 || x >= L.pw || y >= L.ph) return null;
    return {i: Math.min(D.nq - 1, Math.floor(y / L.ch)), j: Math.min(D.nk - 1, Math.floor(x / L.cw))};
  }

  // Zoom (in the app only): drag a box over cells; the page draws that window of the exact pattern.
  function box(a, b) {
    return {i0: Math.min(a.i, b.i), i1: Math.max(a.i, b.i), j0: Math.min(a.j, b.j), j1: Math.max(a.j, b.j)};
  }
  function drawBox(a, b) {
    var x = over.getContext("2d"), k = box(a, b);
    x.clearRect(0, 0, L.W, L.H); tip.hidden = true;
    x.strokeStyle = INK.accent; x.lineWidth = 2; x.setLineDash([5, 3]);
    x.strokeRect(L.left + k.j0 * L.cw, L.top + k.i0 * L.ch, (k.j1 - k.j0 + 1) * L.cw, (k.i1 - k.i0 + 1) * L.ch);
    x.setLineDash([]);
  }
  function ask(queries, keys) {                       // viz/ui/zoom.py's bridge hands this to the page
    root.dataset.asked = queries + "," + keys;
    window.dispatchEvent(new CustomEvent("ae-heatmap-zoom", {detail: {queries: queries, keys: keys}}));
  }
  function zoomTo(a, b) {
    var k = box(a, b), r0 = span(D.q, k.i0, QS, Q0), r1 = span(D.q, k.i1, QS, Q0);
    var c0 = span(D.k, k.j0, KS, K0), c1 = span(D.k, k.j1, KS, K0);
    ask(r0.a + "-" + r1.b, c0.a + "-" + c1.b);
  }
  plot.addEventListener("pointermove", function (ev) {
    if (drag) {
      drag.b = cellAt(ev, true);
      if (Math.abs(ev.clientX - drag.x) + Math.abs(ev.clientY - drag.y) > 6) { drag.moved = true; drawBox(drag.a, drag.b); }
      return;
    }
    focus(cellAt(ev));
  });
  plot.addEventListener("pointerdown", function (ev) {
    var c = cellAt(ev);
    focus(c);
    if (D.zoom && c && ev.pointerType !== "touch" && ev.button === 0) {
      drag = {a: c, b: c, x: ev.clientX, y: ev.clientY, moved: false};
      plot.setPointerCapture(ev.pointerId);
    }
  });
  plot.addEventListener("pointerup", function (ev) {
    var d = drag;
    drag = null;
    if (d && d.moved) { focus(null); drawBox(d.a, d.b); zoomTo(d.a, d.b); }
  });
  plot.addEventListener("pointercancel", function () { drag = null; focus(null); });
  plot.addEventListener("pointerleave", function (ev) { if (ev.pointerType === "mouse" && !drag) focus(null); });
  var wholeButton = document.getElementById("hm-whole");
  wholeButton.hidden = !(D.zoom && ZOOMED);
  wholeButton.onclick = function () { ask("", ""); };
  plot.addEventListener("keydown", function (ev) {
    var moves = {ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1]};
    if (ev.key === "Escape") { focus(null); return; }
    if (!moves[ev.key]) return;
    ev.preventDefault();
    var c = cur || {i: 0, j: 0};
    focus({i: Math.max(0, Math.min(D.nq - 1, c.i + moves[ev.key][0])),
           j: Math.max(0, Math.min(D.nk - 1, c.j + moves[ev.key][1]))});
  });

  // PNG at three times the screen size, for slides and papers.
  document.getElementById("hm-png").onclick = function () {
    var c = document.createElement("canvas"), s = 3;
    c.width = L.W * s; c.height = L.H * s;
    var ctx = c.getContext("2d");
    ctx.setTransform(s, 0, 0, s, 0, 0);
    draw(ctx, L);
    c.toBlob(function (blob) {
      var a = document.createElement("a");
      a.href = URL.createObjectURL(blob); a.download = D.file + ".png";
      document.body.appendChild(a); a.click(); a.remove();
    }, "image/png");
  };

  plot.setAttribute("aria-label", (D.title || "Attention heatmap") + ": " +
    (ZOOMED ? "query rows " + Q0 + " to " + (Q0 + D.q.length - 1) + " by keys " + K0 + " to " + (K0 + D.k.length - 1) +
              " of " + D.nQ + " by " + D.nK : D.q.length + " query rows by " + D.k.length + " key columns") +
    (EXACT ? "" : ", drawn in blocks of " + QS + " by " + KS + " (each block's largest weight)") +
    ". Use the arrow keys to read single weights.");
  document.getElementById("hm-desc").textContent =
    "Queries (rows): " + D.q.join(" | ") + ". Keys (columns): " + D.k.join(" | ") + ".";
  window.heatmap = {data: D, weight: weight, focus: focus, tip: tipText, zoom: ask, cellCentre: function (i, j) {
    return {x: L.left + (j + 0.5) * L.cw, y: L.top + (i + 0.5) * L.ch};
  }};
  render();
  followTheme(root, restyle);                          // Streamlit's light or dark, live (theme.js)
  var last = root.clientWidth;
  new ResizeObserver(function () {                     // the column's width changes (sidebar, window)
    if (root.clientWidth !== last) { last = root.clientWidth; render(); }
  }).observe(root);
})();
