"""Widgets without a browser: move the controls, check what they show (traitlets, plotly FigureWidget)."""

import importlib

import plotly.io as pio
import torch

from fdk.hooks import bn_input_statistics
from fdk.models import create_model
from fdk.viz import PLOTLY_MIME, BNStatisticsView, LiveCurves, SampleGallery, chart_bundle, png_bytes

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def snapshots():
    g = torch.Generator().manual_seed(0)
    return [(f"step {i}", torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8, generator=g)) for i in range(3)]


def test_png_bytes():
    assert png_bytes(torch.zeros(3, 8, 8, dtype=torch.uint8)).startswith(b"\x89PNG")
    assert png_bytes(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), scale=2).startswith(b"\x89PNG")


def test_gallery_slider_and_class_filter_change_the_view():
    predictions = [
        (torch.tensor([0, 1, 2] * 4), torch.full((12,), 0.5)),
        (torch.tensor([3] * 12), torch.full((12,), 0.9)),
        (torch.tensor([4] * 6 + [5] * 6), torch.full((12,), 0.7)),
    ]
    gallery = SampleGallery(snapshots(), predictions, CLASSES)
    first_grid, first_title = gallery.grid.value, gallery.title.value
    assert first_grid.count("<img") == 12 and "airplane 50%" in first_grid and "step 0" in first_title
    assert list(gallery.counts.data[0].y[:3]) == [4, 4, 4]
    gallery.slider.value = 1  # what the browser test does with the mouse
    assert gallery.grid.value != first_grid and "cat 90%" in gallery.grid.value and "airplane" not in gallery.grid.value
    assert gallery.counts.data[0].y[3] == 12
    gallery.slider.value = 2
    gallery.class_filter.value = "dog"
    assert gallery.grid.value.count("<img") == 6 and "6 images predicted dog, out of 12" in gallery.title.value
    gallery.max_images = 4
    gallery.class_filter.value = "all"
    assert gallery.grid.value.count("<img") == 4 and "first 4 of 12 images" in gallery.title.value


def test_gallery_from_teacher_uses_its_predictions():
    teacher = create_model("resnet8").eval()
    gallery = SampleGallery.from_teacher(snapshots(), teacher, (0.5,) * 3, (0.25,) * 3, CLASSES)
    assert len(gallery.predictions) == 3 and gallery.predictions[0][0].shape == (12,)
    assert sum(gallery.counts.data[0].y) == 12


def test_bn_statistics_view_switches_layers():
    teacher = create_model("resnet8").eval()
    stats = bn_input_statistics(teacher, (snapshots()[0][1].float() / 255 - 0.5) / 0.25)
    assert len(stats) == 9 and stats[0][0].shape == (16,)
    view = BNStatisticsView(teacher, {"synthetic": stats})
    assert len(view.summary.data) == 2  # mean and variance distances
    first = list(view.channels.data[0].y)
    view.layer.value = 5
    assert list(view.channels.data[0].y) != first and len(view.channels.data[0].y) == len(stats[5][0])


def test_live_curves_accumulate_records():
    curves = LiveCurves({"test_top1": "Fast-5", "kd_loss": "KD loss"}, x="synth_seconds")
    curves.update({"synth_seconds": 1.0, "test_top1": 10.0, "kd_loss": None})
    curves.update({"synth_seconds": 2.0, "test_top1": 30.0, "kd_loss": 1.5})
    assert list(curves.figure.data[0].y) == [10.0, 30.0] and list(curves.figure.data[1].x) == [2.0]
    assert [t.name for t in curves.figure.data] == ["Fast-5", "KD loss"]
    curves.add_reference("deepinversion", [1, 2], [5, 6])
    assert curves.figure.data[-1].name == "deepinversion"


def test_live_curves_redraw_one_small_output(monkeypatch):
    """Each redraw replaces the same display (display_id) with a small bundle; plotly.js is never in it."""
    import fdk.viz as viz

    shown = []

    class Handle:
        def update(self, bundle, raw):
            shown.append(bundle)

    def fake_display(bundle, raw, display_id):
        assert raw and display_id
        shown.append(bundle)
        return Handle()

    monkeypatch.setattr(viz, "display", fake_display)
    curves = LiveCurves({"test_top1": "top-1"}).show()
    for epoch in range(3):
        curves.update({"epoch": epoch, "test_top1": 10.0 + epoch})
    assert len(shown) == 4
    assert shown[-1][PLOTLY_MIME]["data"][0]["y"] == [10.0, 11.0, 12.0]
    assert all(len(str(bundle)) < 100_000 for bundle in shown), "plotly.js must not be embedded in a redraw"


def test_chart_bundle_has_json_and_a_div_without_plotlyjs():
    import plotly.graph_objects as go

    bundle = chart_bundle(go.Figure(go.Bar(x=[1, 2], y=[3, 4]), layout=dict(height=200)))
    assert bundle[PLOTLY_MIME]["data"][0]["y"] == [3, 4]
    assert "Plotly.newPlot" in bundle["text/html"] and "200px" in bundle["text/html"]
    assert len(bundle["text/html"]) < 50_000


def test_importing_viz_changes_no_global_state():
    import fdk.viz

    default = pio.renderers.default
    importlib.reload(fdk.viz)
    assert pio.renderers.default == default
