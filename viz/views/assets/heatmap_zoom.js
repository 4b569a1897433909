// The heatmap's zoom bridge (viz/ui/zoom.py): a components-v2 element with no markup of its own.
// The canvas heatmap (heatmap.js) lives in the page through st.html and cannot answer Python; when a
// person drags a box on it, or presses "Whole matrix", it dispatches "ae-heatmap-zoom" on window with
// {queries: "a-b", keys: "c-d"} (empty strings: the whole matrix), and this hands it to the script.
// Only these two short strings of digits travel back: the server parses and bounds them again.
export default function (component) {
  const { setTriggerValue } = component;
  const onZoom = (event) => {
    const detail = event.detail || {};
    setTriggerValue("zoom", {queries: String(detail.queries || ""), keys: String(detail.keys || "")});
  };
  window.addEventListener("ae-heatmap-zoom", onZoom);
  return () => window.removeEventListener("ae-heatmap-zoom", onZoom);
}
