// Model view page of viz/views/model_view.py: the mosaic arrives as grey levels (PNG, gaps
// transparent) and is coloured here with the theme's colour table, so a theme switch recolours it.
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("mv-data").textContent);
  var page = document.documentElement, root = document.getElementById("mv");
  var mosaic = document.getElementById("mv-mosaic"), big = document.getElementById("mv-big");
  var tip = document.getElementById("mv-tip");
  var LEFT = 58, TOP = 20;                 // room for "layer n" and "head n" labels
  var levels = null, coloured = document.createElement("canvas"), scale = 1, picked = null, hover = null;
  coloured.width = D.width; coloured.height = D.height;

  document.getElementById("mv-title").textContent = D.title || "";
  document.getElementById("mv-status").textContent = D.nLayers + " layers \u00d7 " + D.nHeads + " heads, " +
    D.nQueries + " \u00d7 " + D.nKeys + " tokens; " + (D.normalize === "head" ? "each thumbnail to its own maximum" :
    "one scale for all") + (D.gamma !== 1 ? ", square-root colours" : "") + ". Hover to name a head, click to enlarge it.";

  function colourise() {                   // grey level -> the theme's colour, gaps -> --ae-gap
    var lut = D.luts[page.getAttribute("data-ae-theme") === "dark" ? "dark" : "light"];
    var gap = themeRGB(page, "gap"), img = new ImageData(D.width, D.height), out = img.data;
    for (var o = 0; o < out.length; o += 4) {
      var v = levels[o] * 3;
      if (levels[o + 3] === 0) { out[o] = gap[0]; out[o + 1] = gap[1]; out[o + 2] = gap[2]; }
      else { out[o] = lut[v]; out[o + 1] = lut[v + 1]; out[o + 2] = lut[v + 2]; }
      out[o + 3] = 255;
    }
    coloured.getContext("2d").putImageData(img, 0, 0);
  }
  function origin(layer, head) { return [head * (D.cellW + D.pad), layer * (D.cellH + D.pad)]; }
  function cellAt(ev) {
    var r = mosaic.getBoundingClientRect();
    var x = (ev.clientX - r.left - LEFT) / scale, y = (ev.clientY - r.top - TOP) / scale;
    if (x < 0 || y < 0 || x >= D.width || y >= D.height) return null;
    var head = Math.floor(x / (D.cellW + D.pad)), layer = Math.floor(y / (D.cellH + D.pad));
    return head < D.nHeads && layer < D.nLayers ? {layer: layer, head: head} : null;
  }
  function draw() {
    // innerWidth counts the scroll bar, so its coming and going cannot make the layout oscillate.
    var avail = Math.max(200, window.innerWidth - 260 - LEFT - 40);
    scale = Math.min(3, avail / D.width);
    var W = LEFT + D.width * scale, H = TOP + D.height * scale, dpr = window.devicePixelRatio || 1;
    mosaic.width = Math.round(W * dpr); mosaic.height = Math.round(H * dpr);
    mosaic.style.width = W + "px"; mosaic.style.height = H + "px";
    var ctx = mosaic.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = themeColour(page, "bg"); ctx.fillRect(0, 0, W, H);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(coloured, LEFT, TOP, D.width * scale, D.height * scale);
    ctx.fillStyle = themeColour(page, "fg"); ctx.font = "11px system-ui, sans-serif"; ctx.textBaseline = "middle";
    var every = Math.max(1, Math.ceil(16 / ((D.cellH + D.pad) * scale)));
    ctx.textAlign = "right";
    for (var l = 0; l < D.nLayers; l += every) ctx.fillText("layer " + l, LEFT - 6, TOP + (origin(l, 0)[1] + D.cellH / 2) * scale);
    var everyH = Math.max(1, Math.ceil(22 / ((D.cellW + D.pad) * scale)));
    ctx.fillText("head", LEFT - 6, TOP / 2);
    ctx.textAlign = "center";
    for (var h = 0; h < D.nHeads; h += everyH) ctx.fillText(String(h), LEFT + (origin(0, h)[0] + D.cellW / 2) * scale, TOP / 2);
    [[hover, "muted", 1], [picked, "accent", 2]].forEach(function (m) {
      if (!m[0]) return;
      var o = origin(m[0].layer, m[0].head);
      ctx.strokeStyle = themeColour(page, m[1]); ctx.lineWidth = m[2];
      ctx.strokeRect(LEFT + o[0] * scale - 1, TOP + o[1] * scale - 1, D.cellW * scale + 2, D.cellH * scale + 2);
    });
    drawBig();
    root.dataset.drawn = "1";
  }
  function drawBig() {
    var dpr = window.devicePixelRatio || 1, S = 220, ctx = big.getContext("2d");
    big.width = Math.round(S * dpr); big.height = Math.round(S * dpr);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = themeColour(page, "bg"); ctx.fillRect(0, 0, S, S);
    var caption = document.getElementById("mv-caption");
    if (!picked) { caption.textContent = "Click a thumbnail to see it large."; return; }
    var o = origin(picked.layer, picked.head), k = S / Math.max(D.cellW, D.cellH);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(coloured, o[0], o[1], D.cellW, D.cellH, 0, 0, D.cellW * k, D.cellH * k);
    caption.textContent = "layer " + picked.layer + ", head " + picked.head + " (rows: queries, columns: keys" +
      (D.nQueries > D.cellH ? ", block means" : "") + ")";
  }
  function same(a, b) { return a && b && a.layer === b.layer && a.head === b.head; }
  mosaic.addEventListener("pointermove", function (ev) {
    var c = cellAt(ev);
    if (!same(c, hover)) { hover = c; draw(); }
    if (!c) { tip.hidden = true; return; }
    tip.textContent = "layer " + c.layer + ", head " + c.head;
    tip.hidden = false;
    var r = mosaic.getBoundingClientRect();
    tip.style.left = (ev.clientX - r.left + 12) + "px"; tip.style.top = (ev.clientY - r.top + 12) + "px";
  });
  mosaic.addEventListener("pointerleave", function () { hover = null; tip.hidden = true; draw(); });
  mosaic.addEventListener("click", function (ev) {
    var c = cellAt(ev); if (!c) return;
    picked = c; root.dataset.picked = c.layer + "," + c.head; draw();
  });

  var img = new Image();
  img.onload = function () {
    var c = document.createElement("canvas"); c.width = D.width; c.height = D.height;
    var x = c.getContext("2d"); x.drawImage(img, 0, 0);
    levels = x.getImageData(0, 0, D.width, D.height).data;
    colourise(); draw();
    followTheme(page, function () { colourise(); draw(); });
    window.addEventListener("resize", draw);
  };
  img.src = "data:image/png;base64," + D.png;
  window.modelView = {data: D, pick: function (layer, head) { picked = {layer: layer, head: head}; draw(); }};
})();
