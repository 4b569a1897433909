"""The HTML/JS views: numpy in, a self-contained HTML page or fragment out (no streamlit, no torch).

- :mod:`viz.views.head_view`  lines between two token columns, one layer (bertviz's head view, small)
- :mod:`viz.views.heatmap`    one attention matrix on a canvas (the heatmap page, no plotly bundle)
- :mod:`viz.views.model_view` the layer x head thumbnail mosaic as a PNG
  (:mod:`viz.figures.model_view` puts it into a clickable figure)
- :mod:`viz.views.escape`     the one escaper for text going into HTML or a script element
- :mod:`viz.views.template`   reads ``assets/`` (importlib.resources, cached) and fills placeholders

Their JavaScript, CSS and HTML are real files in ``viz/views/assets/``; keep them there (they are
package data).  A new view: a module here plus its assets, token text only through
:mod:`viz.views.escape`, a unit test and a browser test.
"""
