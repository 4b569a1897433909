"""The Streamlit layer shared by every page (`from viz import ui`).

- :mod:`viz.ui.state`   URL and session state: every URL parameter declared once, bound to its widget.
- :mod:`viz.ui.compute` every cache, the one route to the current result and to one layer's internals.
- :mod:`viz.ui.widgets` the sidebar, the page header, the pickers and view options.
- :mod:`viz.ui.output`  figures, views, explanations, presentation mode, downloads, the footer.
- :mod:`viz.ui.compare` the compare-heads tabs; :mod:`viz.ui.lm` the generation widgets;
  :mod:`viz.ui.ablation` the ablation widgets; :mod:`viz.ui.zoom` the heatmap's region.

Pages use the names re-exported here and stay short: title, result, pickers, one builder, show it.
"""
from viz.result import head_label  # noqa: F401 - the picker labels pages also use in titles
from viz.ui.compute import (attention_cost_benchmark, current_result, efficient_head,  # noqa: F401
                            efficient_layer, efficient_summary, flow_of, generation, head_metrics, layer_internals,
                            loaded_model, logit_lens, predictions, result_for, result_later, ablation_effect,
                            continuation, head_importance)
from viz.ui.ablation import (ablation_picker, cached_importance, continuation_text,  # noqa: F401
                             knock_out_clicked, masked_lm_effect)
from viz.ui.lm import (branch_buttons, completion_text, gen_mode_switch,  # noqa: F401
                               generation_form)
from viz.ui.output import (apply_presentation, explain_box, figure_font_px, figure_later,  # noqa: F401
                           footer, head_view_all_layers_later, presenting, show_figure, show_view, svg_button,
                           table_download, theme)
from viz.ui.state import (CUSTOM, DEFAULT_TEXT, bind, current_model, current_text, model_choices,  # noqa: F401
                          page_link, park_pick, remember, select_layer_head, set_input, set_url, url_value)
from viz.ui.zoom import pick_window  # noqa: F401
from viz.ui.widgets import (KIND_LABELS, ensure_navigation, flag_toggle, page, pick, pick_head,  # noqa: F401
                            pick_kind, pick_layer_head, row, sidebar, transform, view_options)
