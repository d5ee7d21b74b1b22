"""The training figures: which epochs they draw, what their legends name, where legends sit."""
import numpy as np
import pytest

pytest.importorskip("matplotlib")

from whitebox import plots  # noqa: E402


def record(epoch, layers=3):
    return dict(epoch=epoch, rc=list(50.0 - epoch + np.arange(layers)),
                nonzero=[0.5] * layers, rc_decoder=list(40.0 + np.arange(layers)),
                train_loss=1.0 / epoch, test_loss=1.1 / epoch, train_acc=0.1 * epoch,
                test_acc=0.09 * epoch, test_mse=0.1 / epoch, baseline=0.06, probe_acc=0.5,
                pixel_probe_acc=0.8)


@pytest.fixture
def drawn(monkeypatch):
    """The Figure objects the plotting functions save, instead of files."""
    figures = []
    monkeypatch.setattr(plots, "save", lambda fig, path: figures.append(fig) or path)
    return figures


def legend_texts(fig):
    return [t.get_text() for ax in fig.axes if ax.get_legend()
            for t in ax.get_legend().get_texts()]


def test_epochs_to_draw_spreads_at_most_six_with_the_first_and_last():
    history = [record(e) for e in range(1, 41)]
    shown = [h["epoch"] for h in plots.epochs_to_draw(history)]
    assert len(shown) == 6 and shown[0] == 1 and shown[-1] == 40
    assert shown == sorted(set(shown))
    assert [h["epoch"] for h in plots.epochs_to_draw(history[:4])] == [1, 2, 3, 4]


def test_layers_figure_labels_every_epoch_it_draws(drawn):
    plots.plot_layer_measures([record(e) for e in range(1, 41)], "layers.png")
    fig = drawn[-1]
    lines = [line for line in fig.axes[0].get_lines()]
    labels = legend_texts(fig)
    assert len(lines) == 6 and labels == [f"epoch {e}" for e in (1, 9, 17, 24, 32, 40)]
    assert "6 of the 40 epochs" in fig._suptitle.get_text()


def test_mae_legends_sit_outside_the_axes(drawn):
    from whitebox.tasks.mae import plot_mae_curves, plot_mae_layers

    history = [record(e) for e in range(1, 9)]
    plot_mae_layers(history, "layers.png")
    plot_mae_curves(history, "curves.png")
    for fig in drawn:
        for ax in fig.axes:
            legend = ax.get_legend()
            if legend is None:
                continue
            x, y = legend.get_bbox_to_anchor().transformed(ax.transAxes.inverted()).p0
            assert x > 1.0 or y < 0.0, (x, y)          # right of or under its axes


def test_mlm_curves_show_masked_accuracy_and_the_unigram_line(drawn):
    from whitebox.tasks.mlm import plot_mlm_curves

    plot_mlm_curves([record(e) for e in range(1, 4)], 0.238, "curves.png")
    fig = drawn[-1]
    assert "unigram baseline" in legend_texts(fig)
    acc = fig.axes[1]
    assert "masked accuracy" in acc.get_title()
    assert any(np.allclose(line.get_ydata(), 23.8) for line in acc.get_lines())


def test_atoms_of_a_model_reading_both_sides_come_with_their_right_context(drawn):
    from whitebox.data.text import CharTokenizer
    from whitebox.models import CRATEBERT
    from whitebox.tasks.lm import plot_atoms, top_atom_contexts

    text = "the quick brown fox jumps over the lazy dog. " * 4
    tokenizer = CharTokenizer(sorted(set(text)))
    ids = np.asarray(tokenizer.encode(text))
    windows = np.stack([ids[i:i + 24] for i in range(0, 96, 8)])            # (12, 24)
    model = CRATEBERT(len(tokenizer.chars), 24, 16, 1, 2, seed=0)
    found = top_atom_contexts(model, windows, tokenizer, atoms=3, per_atom=4, left=5, right=5)
    assert len(found) == 3
    for _, _, hits in found:
        for left, char, after, _ in hits:
            assert len(char) == 1 and len(left) <= 5 and len(after) <= 5
            assert left + char + after in text                  # one stretch of the text
    plot_atoms(model, windows, tokenizer, "atoms.png", atoms=3, per_atom=4, right=5)
    texts = [t.get_text() for ax in drawn[-1].axes for t in ax.texts]
    for header in ("before", "char", "after", "code"):
        assert texts.count(header) == 3                          # one header row per atom
