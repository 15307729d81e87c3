"""Notebook views of what fdk computed: image grids as static HTML, charts with plotly.

Two display paths and nothing else:
- images: `images_html` turns uint8 tensors into HTML with PNG data URIs, which papermill, nbconvert
  and nbval all keep (`show_grids`, the gallery's grid);
- charts: `chart_bundle(fig)` is plotly's JSON mimetype (JupyterLab's plotly extension draws it) plus a
  small HTML div for exported pages. plotly.js itself is never written into a notebook: the HTML export
  (`fdk.notebook.export_html`) adds it once per page. `show`, `ChartOutput` (a chart a widget redraws),
  `LiveCurves`, the gallery's class counts and the BN-statistics view all go through it.

Widgets only display tensors that fdk already computed (fdk.evaluate, fdk.hooks); their callbacks index
cached arrays and never train or synthesise. Importing this module changes no global state.
Needs the `notebooks` extra (ipywidgets, plotly).
"""

import base64
import html
import io

import ipywidgets as widgets
import plotly.graph_objects as go
import plotly.io as pio
import torch
from IPython.display import HTML, display
from PIL import Image

from fdk.evaluate import teacher_predictions
from fdk.hooks import BNStatisticsLoss

PLOTLY_MIME = "application/vnd.plotly.v1+json"


# --- images: static HTML -------------------------------------------------------------------------------------


def png_bytes(image: torch.Tensor, scale: int = 1) -> bytes:
    """(3, H, W) or (N, 3, H, W) uint8 -> PNG bytes (a batch becomes one row-major grid of 8 per row)."""
    if image.ndim == 4:
        from torchvision.utils import make_grid

        image = make_grid(image.cpu(), nrow=min(8, len(image)), padding=1)
    picture = Image.fromarray(image.permute(1, 2, 0).cpu().numpy())
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def images_html(items, scale: int = 2, caption_class: str = "") -> str:
    """[(caption, uint8 image or batch)] -> one flex row of captioned PNGs, as an HTML string."""
    cells = []
    for caption, image in items:
        source = base64.b64encode(png_bytes(image, scale)).decode()
        cells.append(
            f'<figure style="margin:2px 6px;text-align:center"><img src="data:image/png;base64,{source}" '
            f'style="image-rendering:pixelated"/><figcaption class="{caption_class}" style="font-size:11px">'
            f"{html.escape(caption)}</figcaption></figure>"
        )
    return f'<div style="display:flex;flex-wrap:wrap">{"".join(cells)}</div>'


def show_grids(grids: dict, scale: int = 2, max_images: int = 32) -> None:
    """Named batches side by side, each as a grid of its first `max_images` images."""
    display(HTML(images_html([(name, images[:max_images].cpu()) for name, images in grids.items()], scale)))


# --- charts: plotly --------------------------------------------------------------------------------------------


def chart_bundle(figure: go.Figure) -> dict:
    """The mimebundle of a chart: plotly's JSON for JupyterLab, a div for HTML exports (no plotly.js)."""
    height = f"{figure.layout.height}px" if figure.layout.height else "450px"
    return {
        PLOTLY_MIME: figure.to_plotly_json(),
        "text/html": pio.to_html(figure, include_plotlyjs=False, full_html=False, default_height=height),
    }


def show(figure: go.Figure, display_id=None):
    """Display a chart; with display_id=True returns a handle whose .update(chart_bundle(...), raw=True)
    redraws it in place."""
    return display(chart_bundle(figure), raw=True, display_id=display_id)


class ChartOutput:
    """A chart inside a widget layout that its owner redraws with `redraw()` after changing `figure`."""

    def __init__(self, figure: go.Figure):
        self.figure = figure
        self.widget = widgets.Output()
        self.redraw()

    def redraw(self) -> None:
        self.widget.clear_output(wait=True)
        with self.widget:
            show(self.figure)


class LiveCurves:
    """Training curves that redraw while a run goes and stay as a static chart in executed notebooks.

    `curves` maps a record field to the curve's name, e.g. {"test_top1": "Fast-5"}. Feed it with
    `distill(..., on_epoch=curves.update)`: each redraw replaces the same output (a display handle).
    """

    def __init__(self, curves: dict[str, str], x: str = "epoch", title: str = "", x_title=None, y_title="",
                 height=320, log_x: bool = False):  # fmt: skip
        self.x, self.fields, self.records = x, list(curves), []
        self.figure = go.Figure(layout=dict(title=title, height=height, xaxis_title=x_title or x, yaxis_title=y_title))
        if log_x:
            self.figure.update_xaxes(type="log")
        for name in curves.values():
            self.figure.add_scatter(x=[], y=[], mode="lines+markers", name=name)
        self.handle = None

    def show(self) -> "LiveCurves":
        self.handle = show(self.figure, display_id=True)
        return self

    def add_reference(self, name: str, xs, ys, dash: str = "dash") -> None:
        """A finished curve to compare against (e.g. another method's run)."""
        self.figure.add_scatter(x=list(xs), y=list(ys), mode="lines", name=name, line=dict(dash=dash))
        self._redraw()

    def update(self, record: dict) -> None:
        self.records.append(record)
        for trace, field in zip(self.figure.data, self.fields):
            points = [(r[self.x], r[field]) for r in self.records if r.get(field) is not None and self.x in r]
            trace.x, trace.y = [p[0] for p in points], [p[1] for p in points]
        self._redraw()

    def _redraw(self) -> None:
        if self.handle is not None:
            self.handle.update(chart_bundle(self.figure), raw=True)


# --- widgets ---------------------------------------------------------------------------------------------------


class SampleGallery:
    """Synthetic samples, one view per snapshot (a synthesis step or an epoch).

    A slider picks the snapshot, a dropdown filters by the teacher's predicted class; each image shows
    the teacher's class and confidence under it, and a bar chart counts the predicted classes.
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
        self.counts = go.Figure(
            go.Bar(x=self.class_names, y=[0] * len(self.class_names)),
            layout=dict(height=220, margin=dict(l=40, r=10, t=30, b=60), title="teacher's predicted classes",
                        yaxis_title="images"),
        )  # fmt: skip
        self.counts_chart = ChartOutput(self.counts)
        self.slider.observe(lambda change: self.render(), names="value")
        self.class_filter.observe(lambda change: self.render(), names="value")
        controls = widgets.HBox([self.slider, self.class_filter])
        self.widget = widgets.VBox([controls, self.title, self.grid, self.counts_chart.widget])
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
        shown = keep[: self.max_images]
        items = [(f"{self.class_names[classes[i]]} {100 * confidences[i]:.0f}%", images[i]) for i in shown]
        self.grid.value = images_html(items, self.scale, caption_class="fdk-caption")
        first = f"first {len(shown)} of " if len(shown) < len(keep) else ""
        matched = "" if chosen == "all" else f" predicted {html.escape(chosen)}, out of {len(images)}"
        self.title.value = f"<b>{html.escape(str(label))}</b>: showing {first}{len(keep)} images{matched}"
        self.counts.data[0].y = torch.bincount(classes, minlength=len(self.class_names)).tolist()
        self.counts_chart.redraw()

    def _ipython_display_(self):
        display(self.widget)


class BNStatisticsView:
    """Real (the teacher's running statistics) vs synthetic BN-input statistics, layer by layer.

    `summary`: per-layer distance (RMS over channels) of means and of variances, one curve per batch.
    The widget: a dropdown picks a layer and shows each channel's real vs synthetic mean.
    """

    def __init__(self, teacher, synthetic: dict[str, list[tuple[torch.Tensor, torch.Tensor]]]):
        layers = BNStatisticsLoss(teacher).layers
        self.names = [name for name, m in teacher.named_modules() if any(m is layer for layer in layers)]
        self.real = [(m.running_mean.cpu(), m.running_var.cpu()) for m in layers]
        self.synthetic = synthetic  # {"noise": stats, "inverted": stats, ...} from fdk.hooks.bn_input_statistics
        self.summary = go.Figure(
            layout=dict(height=300, title="distance to the teacher's running statistics, per BN layer",
                        xaxis_title="BN layer (input side to output side)", yaxis_title="RMS over channels",
                        yaxis_type="log"),
        )  # fmt: skip
        for label, stats in synthetic.items():
            for k, part in ((0, "mean"), (1, "variance")):
                distance = [float((s[k] - r[k]).pow(2).mean().sqrt()) for s, r in zip(stats, self.real)]
                self.summary.add_scatter(y=distance, name=f"{label} {part}", mode="lines+markers")
        self.layer = widgets.Dropdown(options=[(n, i) for i, n in enumerate(self.names)], value=0, description="layer")
        self.channels = go.Figure(
            layout=dict(height=320, title="per-channel mean of the layer's input", xaxis_title="real (running mean)",
                        yaxis_title="synthetic batch mean"),
        )  # fmt: skip
        for label in synthetic:
            self.channels.add_scatter(x=[], y=[], mode="markers", name=label)
        self.channels.add_scatter(x=[], y=[], mode="lines", name="equal", line=dict(dash="dot", color="gray"))
        self.channels_chart = ChartOutput(self.channels)
        self.layer.observe(lambda change: self.render(), names="value")
        self.widget = widgets.VBox([self.layer, self.channels_chart.widget])
        self.render()

    def render(self) -> None:
        i = self.layer.value
        real = self.real[i][0]
        for trace, stats in zip(self.channels.data, self.synthetic.values()):
            trace.x, trace.y = real.tolist(), stats[i][0].tolist()
        low, high = float(real.min()), float(real.max())
        self.channels.data[-1].x, self.channels.data[-1].y = [low, high], [low, high]
        self.channels_chart.redraw()

    def _ipython_display_(self):
        display(self.widget)


def figure1_chart(results: dict) -> go.Figure:
    """The paper's Figure 1 from a benchmarks/figure1.py results file: final accuracy against total
    synthesis time (left) and each run's accuracy against synthesis time so far (right), log time axes."""
    from plotly.subplots import make_subplots

    figure = make_subplots(rows=1, cols=2, subplot_titles=("final accuracy vs synthesis time",
                                                           "accuracy during the run vs synthesis time so far"))  # fmt: skip
    for name, run in results["runs"].items():
        symbol = {"deepinversion": "square", "cmi": "square-open", "fast_meta": "circle", "fast": "triangle-up",
                  "no_reuse": "triangle-up"}.get(run["method"], "diamond")  # diamonds: the generator baselines
        figure.add_scatter(x=[run["synth_seconds"]], y=[run["final_top1"]], mode="markers", name=name,
                           marker=dict(symbol=symbol, size=11), legendgroup=name, row=1, col=1)  # fmt: skip
        seconds, top1 = zip(*run["curve"])
        figure.add_scatter(x=seconds, y=top1, mode="lines+markers", name=name, marker=dict(symbol=symbol, size=5),
                           legendgroup=name, showlegend=False, row=1, col=2)  # fmt: skip
    figure.update_xaxes(type="log", title_text="synthesis seconds (log)")
    figure.update_yaxes(title_text="student test top-1 (%)")
    figure.update_layout(height=420, title=results["what"])
    return figure
