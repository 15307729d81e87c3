"""Widgets without a browser: move the controls, check what they show (traitlets, plotly FigureWidget)."""

import torch

from fdk.models import create_model
from fdk.viz import BNStatisticsView, LiveCurves, SampleGallery, bn_input_statistics, png_bytes

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
    stats = bn_input_statistics(teacher, snapshots()[0][1], (0.5,) * 3, (0.25,) * 3)
    assert len(stats) == 9 and stats[0][0].shape == (16,)
    view = BNStatisticsView(teacher, {"synthetic": stats})
    assert len(view.summary.data) == 2  # mean and variance distances
    first = list(view.channels.data[0].y)
    view.layer.value = 5
    assert list(view.channels.data[0].y) != first and len(view.channels.data[0].y) == len(stats[5][0])


def test_live_curves_accumulate_records():
    curves = LiveCurves(["test_top1", "kd_loss"], x="synth_seconds")
    curves.update({"synth_seconds": 1.0, "test_top1": 10.0, "kd_loss": None})
    curves.update({"synth_seconds": 2.0, "test_top1": 30.0, "kd_loss": 1.5})
    assert list(curves.figure.data[0].y) == [10.0, 30.0] and list(curves.figure.data[1].x) == [2.0]
    curves.add_reference("deepinversion", [1, 2], [5, 6])
    assert curves.figure.data[-1].name == "deepinversion"


def test_live_curves_redraw_one_small_output(monkeypatch):
    """Each redraw replaces the same display (display_id) with a small bundle; plotly.js loads once."""
    import fdk.viz as viz

    shown, activations = [], []

    class Handle:
        def update(self, bundle, raw):
            shown.append(bundle)

    def fake_display(bundle, raw, display_id):
        assert raw and display_id
        shown.append(bundle)
        return Handle()

    monkeypatch.setattr(viz, "display", fake_display)
    monkeypatch.setattr(viz, "_plotlyjs_loaded", False)
    monkeypatch.setattr(viz.pio.renderers["notebook"], "activate", lambda: activations.append(1))
    curves = LiveCurves(["test_top1"]).show()
    for epoch in range(3):
        curves.update({"epoch": epoch, "test_top1": 10.0 + epoch})
    LiveCurves(["kd_loss"]).show()
    assert len(shown) == 5 and len(activations) == 1
    last = shown[3]
    assert last["application/vnd.plotly.v1+json"]["data"][0]["y"] == [10.0, 11.0, 12.0]
    assert all(len(str(bundle)) < 100_000 for bundle in shown), "plotly.js must not be embedded in every redraw"
