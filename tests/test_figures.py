"""`simulate --plot` as a reader sees it: no stray subtitle, channel 0 at the bottom of every panel
(rasters and heat maps alike), the true label marked in the readout, the input shown, and a deep
model laid out as a grid rather than one long column.  The figures are the real ones the command
draws (a spy keeps each Figure the command makes; nothing is replaced)."""
import os
import struct

import pytest

import neurocompile.plots as plots
from neurocompile.cli import main as cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = {"spikingssm": os.path.join(ROOT, "examples", "digits", "ckpt.pt"),
            "pspikessm": os.path.join(ROOT, "examples", "pspikessm-digits", "ckpt.pt")}
INDEX = 3                                              # digits test sample 3 is a 9


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    """{model: (Figure, png path)} of `simulate --plot` on each example, sample #3."""
    out, made = tmp_path_factory.mktemp("figures"), {}
    real = plots.raster_figure
    for kind, ckpt in EXAMPLES.items():
        art, png = out / f"{kind}.loihi2", out / f"{kind}.png"
        assert cli(["export", ckpt, "-o", str(art)]) == 0
        figures = []
        plots.raster_figure = lambda *a, **k: figures.append(real(*a, **k)) or figures[-1]
        try:
            assert cli(["simulate", str(art), "--data", "digits", "--engine", "emulator", "--index", str(INDEX),
                        "--plot", str(png)]) == 0
        finally:
            plots.raster_figure = real
        assert len(figures) == 1
        made[kind] = (figures[0], png)
    return made


def _texts(fig):
    yield from fig.texts
    for ax in fig.axes:
        yield from ax.texts
        yield ax.title


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_no_stray_side_title_and_channel_zero_at_the_bottom(drawn, kind):
    fig, _ = drawn[kind]
    words = [t.get_text() for t in _texts(fig)]
    assert "run" not in words, words
    assert not [t.get_text() for t in _texts(fig) if t.get_fontweight() == "bold" and "true" not in t.get_text()]
    panels = [ax for ax in fig.axes if ax.get_title().startswith(("layer", "input"))]
    assert panels
    for ax in panels:
        lo, hi = ax.get_ylim()
        assert lo < hi, (ax.get_title(), ax.get_ylim())        # imshow's default (origin upper) inverts it


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_readout_marks_the_true_label_and_the_input_is_shown(drawn, kind):
    fig, _ = drawn[kind]
    readout = [ax for ax in fig.axes if ax.get_title().startswith("readout")]
    assert len(readout) == 1
    ax = readout[0]
    assert ", true 9 " in ax.get_title()
    marks = [t for t in ax.texts if "true" in t.get_text()]
    assert len(marks) == 1 and marks[0].xy[0] == 9
    assert [p for p in ax.patches if p.get_x() < 9 < p.get_x() + p.get_width()][0].get_linewidth() == 2.0
    inputs = [ax for ax in fig.axes if ax.get_title().startswith("input: raw integer levels (1 channel x 64 steps)")]
    assert len(inputs) == 1
    line = inputs[0].lines[0].get_ydata()
    assert len(line) == 64 and line.max() > 0


def test_a_deep_model_is_a_grid_not_one_column(drawn):
    fig, png = drawn["pspikessm"]
    columns = {round(ax.get_position().x0, 3) for ax in fig.axes if ax.get_visible() and ax.axison
               and not ax.get_label() == "<colorbar>"}
    assert len(columns) >= 2, columns
    width, height = struct.unpack(">II", png.read_bytes()[16:24])     # the PNG's IHDR
    assert height < 1.5 * width, (width, height)                      # was 627 x 1947 (one column)
