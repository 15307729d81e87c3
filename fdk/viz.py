"""Notebook views of what fdk computed: a sample gallery, real-vs-synthetic BN statistics, live curves.

Widgets only display tensors that fdk already produced; their callbacks index cached arrays and never
train or synthesise. Needs the `notebooks` extra (ipywidgets, plotly >= 6 with anywidget).
"""

import base64
import html
import io

import ipywidgets as widgets
import plotly.graph_objects as go
import plotly.io as pio
import torch
from IPython.display import display
from PIL import Image

from fdk.augment import normalize, to_unit
from fdk.hooks import BNStatisticsLoss

# Jupyter's default renderer (plotly_mimetype) shows nothing in an nbconvert HTML export; adding
# "notebook" embeds plotly.js once, so executed notebooks exported to HTML keep their charts offline.
if pio.renderers.default == "plotly_mimetype":
    pio.renderers.default = "plotly_mimetype+notebook"


def png_bytes(image: torch.Tensor, scale: int = 1) -> bytes:
    """(3, H, W) or (N, 3, H, W) uint8 -> PNG bytes (a batch becomes one row-major grid)."""
    if image.ndim == 4:
        from torchvision.utils import make_grid

        image = make_grid(image.cpu(), nrow=min(8, len(image)), padding=1)
    array = image.permute(1, 2, 0).cpu().numpy()
    picture = Image.fromarray(array)
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def show_grids(grids: dict, scale: int = 2, nrow: int = 8) -> None:
    """Image grids side by side with a caption each, as static HTML (kept in exported notebooks)."""
    from IPython.display import HTML

    cells = []
    for caption, images in grids.items():
        source = base64.b64encode(png_bytes(images[: nrow * nrow].cpu(), scale)).decode()
        cells.append(
            f'<figure style="margin:6px;text-align:center"><img src="data:image/png;base64,{source}" '
            f'style="image-rendering:pixelated"/><figcaption>{html.escape(caption)}</figcaption></figure>'
        )
    display(HTML(f'<div style="display:flex;flex-wrap:wrap">{"".join(cells)}</div>'))


@torch.no_grad()
def teacher_predictions(teacher, images: torch.Tensor, mean, std) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted class, confidence) of the teacher for uint8 images."""
    device = next(teacher.parameters()).device
    was_training = teacher.training
    teacher.eval()
    probs = teacher(normalize(to_unit(images.to(device)), mean, std)).float().softmax(1)
    teacher.train(was_training)
    confidence, predicted = probs.max(1)
    return predicted.cpu(), confidence.cpu()


class SampleGallery:
    """Synthetic samples, one view per snapshot (a synthesis step or an epoch).

    A slider picks the snapshot, a dropdown filters by the teacher's predicted class; each image shows
    the teacher's class and confidence under it, and a bar counts the predicted classes.
    """

    def __init__(self, snapshots, predictions, class_names, slider_label="step", max_images=24, scale=3):
        self.snapshots = [(label, images.cpu()) for label, images in snapshots]
        self.predictions = predictions  # [(classes (N,), confidences (N,))] per snapshot
        self.class_names, self.max_images, self.scale = list(class_names), max_images, scale
        self.slider = widgets.IntSlider(
            value=0, min=0, max=len(snapshots) - 1, description=slider_label, continuous_update=False
        )
        self.class_filter = widgets.Dropdown(options=["all", *self.class_names], value="all", description="class")
        self.title = widgets.HTML()
        self.grid = widgets.HTML()
        self.counts = go.FigureWidget(
            go.Bar(x=self.class_names, y=[0] * len(self.class_names)),
            layout=dict(
                height=220,
                margin=dict(l=40, r=10, t=30, b=60),
                title="teacher's predicted classes",
                yaxis_title="images",
            ),
        )
        self.slider.observe(lambda change: self.render(), names="value")
        self.class_filter.observe(lambda change: self.render(), names="value")
        self.widget = widgets.VBox([widgets.HBox([self.slider, self.class_filter]), self.title, self.grid, self.counts])
        self.widget.add_class("fdk-gallery")
        self.render()

    @classmethod
    def from_teacher(cls, snapshots, teacher, mean, std, class_names, **kwargs) -> "SampleGallery":
        """Predictions are computed once here; moving the slider only indexes them."""
        predictions = [teacher_predictions(teacher, images, mean, std) for _, images in snapshots]
        return cls(snapshots, predictions, class_names, **kwargs)

    def render(self) -> None:
        label, images = self.snapshots[self.slider.value]
        classes, confidences = self.predictions[self.slider.value]
        chosen = self.class_filter.value
        keep = [i for i in range(len(images)) if chosen == "all" or self.class_names[classes[i]] == chosen]
        cells = []
        for i in keep[: self.max_images]:
            source = base64.b64encode(png_bytes(images[i], self.scale)).decode()
            caption = f"{self.class_names[classes[i]]} {100 * confidences[i]:.0f}%"
            cells.append(
                f'<figure style="margin:2px;text-align:center"><img src="data:image/png;base64,{source}" '
                f'style="image-rendering:pixelated"/><figcaption class="fdk-caption" style="font-size:11px">'
                f"{html.escape(caption)}</figcaption></figure>"
            )
        shown = f"first {len(cells)} of " if len(cells) < len(keep) else ""
        matched = "" if chosen == "all" else f" predicted {html.escape(chosen)}, out of {len(images)}"
        self.title.value = f"<b>{html.escape(str(label))}</b>: showing {shown}{len(keep)} images{matched}"
        self.grid.value = f'<div style="display:flex;flex-wrap:wrap">{"".join(cells)}</div>'
        counts = torch.bincount(classes, minlength=len(self.class_names)).tolist()
        with self.counts.batch_update():
            self.counts.data[0].y = counts

    def _ipython_display_(self):
        display(self.widget)


@torch.no_grad()
def bn_input_statistics(teacher, images: torch.Tensor, mean, std) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(mean, variance) of every BN layer's input for a batch of uint8 images (no augmentation)."""
    device = next(teacher.parameters()).device
    teacher.eval()
    probe = BNStatisticsLoss(teacher, momentum=0.0)
    with probe.attached():
        teacher(normalize(to_unit(images.to(device)), mean, std))
    return [(m.cpu(), v.cpu()) for m, v in probe.last_statistics()]


class BNStatisticsView:
    """Real (the teacher's running statistics) vs synthetic BN-input statistics, layer by layer.

    Top: per-layer distance (RMS over channels) of means and of variances. Bottom: a dropdown picks a
    layer and shows each channel's real vs synthetic mean; points on the diagonal match.
    """

    def __init__(self, teacher, synthetic: dict[str, list[tuple[torch.Tensor, torch.Tensor]]]):
        self.layers = BNStatisticsLoss(teacher).layers
        self.names = [name for name, m in teacher.named_modules() if m in self.layers]
        self.real = [(m.running_mean.cpu(), m.running_var.cpu()) for m in self.layers]
        self.synthetic = synthetic  # {"noise": stats, "synthetic": stats, ...}
        self.summary = go.Figure(
            layout=dict(
                height=300,
                title="distance to the teacher's running statistics, per BN layer",
                xaxis_title="BN layer (input side to output side)",
                yaxis_title="RMS over channels",
                yaxis_type="log",
            )
        )
        for label, stats in synthetic.items():
            for k, part in ((0, "mean"), (1, "variance")):
                distance = [float((s[k] - r[k]).pow(2).mean().sqrt()) for s, r in zip(stats, self.real)]
                self.summary.add_scatter(y=distance, name=f"{label} {part}", mode="lines+markers")
        self.layer = widgets.Dropdown(
            options=[(name, i) for i, name in enumerate(self.names)], value=0, description="layer"
        )
        self.channels = go.FigureWidget(
            layout=dict(
                height=320,
                title="per-channel mean of the layer's input",
                xaxis_title="real (running mean)",
                yaxis_title="synthetic batch mean",
            )
        )
        for label in synthetic:
            self.channels.add_scatter(x=[], y=[], mode="markers", name=label)
        self.channels.add_scatter(x=[], y=[], mode="lines", name="equal", line=dict(dash="dot", color="gray"))
        self.layer.observe(lambda change: self.render(), names="value")
        self.render()
        self.widget = widgets.VBox([go.FigureWidget(self.summary), self.layer, self.channels])

    def render(self) -> None:
        i = self.layer.value
        real = self.real[i][0]
        with self.channels.batch_update():
            for trace, stats in zip(self.channels.data, self.synthetic.values()):
                trace.x, trace.y = real.tolist(), stats[i][0].tolist()
            low, high = float(real.min()), float(real.max())
            self.channels.data[-1].x, self.channels.data[-1].y = [low, high], [low, high]

    def _ipython_display_(self):
        display(self.widget)


class LiveCurves:
    """Training curves that redraw while a run goes and stay as a static chart in executed notebooks.

    A plain plotly Figure re-displayed through one display handle: live in JupyterLab, and the last
    state is what papermill/nbconvert keep. Feed it with `distill(..., on_epoch=curves.update)`.
    """

    def __init__(self, y: list[str], x: str = "epoch", title: str = "", x_title=None, y_title="", height=320):
        self.x, self.y, self.records = x, y, []
        self.figure = go.Figure(layout=dict(title=title, height=height, xaxis_title=x_title or x, yaxis_title=y_title))
        for name in y:
            self.figure.add_scatter(x=[], y=[], mode="lines+markers", name=name)
        self.handle = None

    def show(self) -> "LiveCurves":
        # A raw mimebundle: a plotly Figure's own _ipython_display_ ignores display_id, so every update
        # would append a new chart instead of replacing this one.
        _load_plotlyjs_once()
        self.handle = display(self._mimebundle(), raw=True, display_id=True)
        return self

    def _mimebundle(self) -> dict:
        # Built from the renderers directly: Figure._repr_mimebundle_ re-emits all of plotly.js (5 MB)
        # on every call, which made each redraw a new 5 MB output in executed notebooks.
        figure = self.figure.to_dict()
        return {
            **pio.renderers["plotly_mimetype"].to_mimebundle(figure),
            **pio.renderers["notebook"].to_mimebundle(figure),
        }

    def add_reference(self, name: str, xs, ys, dash: str = "dash") -> None:
        """A finished curve to compare against (e.g. another method's run)."""
        self.figure.add_scatter(x=list(xs), y=list(ys), mode="lines", name=name, line=dict(dash=dash))
        self._redraw()

    def update(self, record: dict) -> None:
        self.records.append(record)
        for trace, name in zip(self.figure.data, self.y):
            points = [(r[self.x], r[name]) for r in self.records if r.get(name) is not None and self.x in r]
            trace.x, trace.y = [p[0] for p in points], [p[1] for p in points]
        self._redraw()

    def _redraw(self) -> None:
        if self.handle is not None:
            self.handle.update(self._mimebundle(), raw=True)


_plotlyjs_loaded = False


def _load_plotlyjs_once() -> None:
    """The HTML of a live chart calls window.Plotly; load the library into the page once per kernel."""
    global _plotlyjs_loaded
    if not _plotlyjs_loaded:
        pio.renderers["notebook"].activate()
        _plotlyjs_loaded = True
