// Light or dark for a view (viz/views/theme.py). Inlined before each view's own script, inside
// one function scope, so nothing leaks into the page.
//
// followTheme(root, onChange): root carries data-ae-theme, the theme the view was built with.
// When the view sits in a Streamlit page (st.html: the same document; st.iframe: a same-origin
// parent), the app's real background decides, live: Streamlit does not rerun the script when a
// person switches its theme, and st.context.theme can be wrong on a session's first run. In a
// notebook (a sandboxed iframe) or a saved page there is no app to read: the built theme stays.
function followTheme(root, onChange) {
  function findApp() {
    try { var here = document.querySelector(".stApp"); if (here) return here; } catch (e) { /* none */ }
    try {
      var frame = window.frameElement;    // null in a sandboxed or cross-origin frame
      if (frame) return frame.ownerDocument.querySelector(".stApp");
    } catch (e) { /* cross-origin parent */ }
    return null;
  }
  function channel(c) { c /= 255; return c <= 0.04045 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4); }
  function backgroundOf(el) {          // the first opaque background from el upwards
    for (; el && el.nodeType === 1; el = el.parentElement) {
      var bg = el.ownerDocument.defaultView.getComputedStyle(el).backgroundColor;
      var m = /rgba?\(([^)]+)\)/.exec(bg), p = m ? m[1].split(/[ ,\/]+/).map(parseFloat) : null;
      if (p && !(p.length > 3 && p[3] === 0)) return {css: bg, rgb: p};
    }
    return null;
  }
  var app = findApp();
  if (!app) return;
  var frame = window.frameElement, observer = null;
  function sync() {
    if (!root.isConnected || (frame && !frame.isConnected)) { if (observer) observer.disconnect(); return; }
    var bg = backgroundOf(app);
    if (!bg) return;
    var y = 0.2126 * channel(bg.rgb[0]) + 0.7152 * channel(bg.rgb[1]) + 0.0722 * channel(bg.rgb[2]);
    var theme = y < 0.25 ? "dark" : "light";
    if (theme === root.getAttribute("data-ae-theme") && bg.css === root.style.getPropertyValue("--ae-bg")) return;
    root.setAttribute("data-ae-theme", theme);
    root.style.setProperty("--ae-bg", bg.css);
    onChange(theme);
  }
  sync();
  // A theme switch restyles the app's root element (new class names): follow it.
  observer = new MutationObserver(function () { requestAnimationFrame(sync); });
  observer.observe(app, {attributes: true, attributeFilter: ["class", "style"]});
}

// The value of a theme variable (assets/theme.css) on root, e.g. themeColour(root, "fg").
function themeColour(root, name) {
  return getComputedStyle(root).getPropertyValue("--ae-" + name).trim();
}
// The same as [r, g, b] for pixel work; accepts #rrggbb and rgb()/rgba().
function themeRGB(root, name) {
  var c = themeColour(root, name), m = /^#([0-9a-f]{6})$/i.exec(c);
  if (m) return [0, 2, 4].map(function (o) { return parseInt(m[1].substr(o, 2), 16); });
  m = /rgba?\(([^)]+)\)/.exec(c);
  return m ? m[1].split(/[ ,\/]+/).slice(0, 3).map(parseFloat) : [128, 128, 128];
}
