"""The shared heatmap builder, on hand-made matrices."""
import numpy as np

from viz.figures.attention import heatmap_figure
from viz.figures.common import export_config


def test_repeated_tokens_keep_separate_rows():
    a = np.eye(3, dtype=np.float32)
    fig = heatmap_figure(a, ["the", "cat", "the"], ["the", "cat", "the"])
    trace = fig.data[0]
    assert len(set(trace.y)) == 3 and len(set(trace.x)) == 3  # no merged rows
    assert list(fig.layout.yaxis.ticktext) == ["the", "cat", "the"]
    assert fig.layout.yaxis.autorange == "reversed"
    np.testing.assert_array_equal(np.asarray(trace.z), a)


def test_causal_mask_is_a_gap_not_zero():
    a = np.tril(np.ones((4, 4), np.float32)) / np.arange(1, 5)[:, None]
    z = np.asarray(heatmap_figure(a, list("abcd"), list("abcd"), causal=True).data[0].z)
    assert np.isnan(z[0, 1]) and np.isnan(z[2, 3]) and z[3, 0] == 0.25


def test_hover_names_query_key_weight_and_ticks_thin_out():
    n = 300
    fig = heatmap_figure(np.full((n, n), 1 / n, np.float32), [f"t{i}" for i in range(n)], [f"t{i}" for i in range(n)])
    assert "query" in fig.data[0].hovertemplate and "weight" in fig.data[0].hovertemplate
    assert len(fig.layout.xaxis.tickvals) <= 80 and fig.layout.xaxis.ticktext[1] == "t4"


def test_export_config_file_name_is_safe():
    cfg = export_config("attention L1/H2 <x>")
    assert cfg["toImageButtonOptions"]["filename"] == "attention_L1_H2__x_"


def test_step_grid_of_a_long_context_draws_key_blocks_of_their_largest_weight():
    from viz.figures.generation import step_grid_figure
    from viz.figures.overview import MAX_PLOT_SIDE
    rng = np.random.default_rng(0)
    n_layers, n_heads, n_keys = 3, 4, 2 * MAX_PLOT_SIDE + 5
    rows = rng.random((n_layers, n_heads, n_keys)).astype(np.float32)
    rows[1, 2, 700] = 5.0                                      # one sharp look stays visible
    labels = [f"t{j}" for j in range(n_keys)]
    fig = step_grid_figure(rows, labels, title="Step 3")
    z = np.asarray(fig.data[0].z, dtype=np.float32)
    size = -(-n_keys // MAX_PLOT_SIDE)                         # 3 keys a block
    assert z.shape == (n_layers * n_heads, -(-n_keys // size))
    flat = rows.reshape(n_layers * n_heads, n_keys)
    for b in range(z.shape[1]):                                # each block is its keys' largest weight
        np.testing.assert_array_equal(z[:, b], flat[:, b * size:(b + 1) * size].max(axis=1))
    assert z[1 * n_heads + 2, 700 // size] == 5.0
    assert fig.data[0].x[1].startswith(f"{size}-{2 * size - 1} ")
    assert "largest weight" in fig.data[0].hovertemplate and "blocks of 3" in fig.layout.title.text
    short = step_grid_figure(rows[:, :, :50], labels[:50])     # short contexts: every key, unchanged
    np.testing.assert_array_equal(np.asarray(short.data[0].z, dtype=np.float32), flat[:, :50])
