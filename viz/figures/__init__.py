"""Every plotly figure builder: numpy in, ``go.Figure`` out (no streamlit, no torch).

One module per page family, every builder named ``<noun>_figure``:

- :mod:`viz.figures.common`     colour scales, the colour LUT, tick thinning, heatmap sizes, margins,
                                the toolbar export config (shared by all figures and by the views)
- :mod:`viz.figures.attention`  :func:`heatmap_figure`, one token x token attention matrix
- :mod:`viz.figures.model_view` :func:`model_view_figure`, every layer x head as a clickable mosaic
- :mod:`viz.figures.stats`      metric grids, the head similarity map, difference heatmaps
- :mod:`viz.figures.math`       vector strips and per-key bars of the attention-math page
- :mod:`viz.figures.flow`       token relevance bars of the attention-flow page
- :mod:`viz.figures.efficient`  pattern grids, cost curves and tables of the efficient-attention lab

A new figure goes into the module of the page family it serves, with a unit test on hand-made
arrays; the HTML/JS views (no plotly) live in :mod:`viz.views`.
"""
