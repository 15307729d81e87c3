"""Notebook 04's views (ImageNet scaling): the teacher's top-5 under synthetic images, cost charts, a test card.

`Top5Gallery` pages through images with the teacher's five most likely classes under each: a widget (a
page slider and a top-1 class filter) followed by a static copy of the first page, which offline exports
(fdk.notebook.export_html) show where the widget cannot run. Like fdk.viz, callbacks only index
predictions computed once.
"""

import base64
import html

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import torch
from IPython.display import HTML, display
from PIL import Image, ImageDraw
from plotly.subplots import make_subplots

from fdk.evaluate import normalized, predict
from fdk.viz import png_bytes


def top_k(teacher, images: torch.Tensor, mean, std, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities (N, k), classes (N, k)) of the teacher for uint8 images, most likely first, on the CPU."""
    probs = predict(teacher, normalized(images, teacher, mean, std)).float().softmax(1)
    top = probs.topk(min(k, probs.shape[1]), dim=1)
    return top.values.cpu(), top.indices.cpu()


def top5_html(images, probs, classes, class_names, scale: int = 1) -> str:
    """A flex row of images, each with its classes and probabilities listed under it."""
    cells = []
    for image, p, c in zip(images, probs, classes):
        source = png_bytes(image.cpu(), scale)
        rows = "".join(
            f"<div><b>{100 * float(pi):.0f}%</b> {html.escape(str(class_names[int(ci)])[:22])}</div>"
            for pi, ci in zip(p, c)
        )
        cells.append(
            f'<figure style="margin:3px 6px;width:{max(112, image.shape[-1] * scale)}px">'
            f'<img src="data:image/png;base64,{base64.b64encode(source).decode()}" style="image-rendering:pixelated"/>'
            f'<figcaption style="font-size:10px;line-height:1.2;text-align:left">{rows}</figcaption></figure>'
        )
    return f'<div style="display:flex;flex-wrap:wrap">{"".join(cells)}</div>'


class Top5Gallery:
    """uint8 images (N, 3, H, W) with the teacher's top-5, `per_page` at a time."""

    def __init__(self, images, probs, classes, class_names, per_page: int = 8, scale: int = 1, title: str = ""):
        self.images, self.probs, self.classes = images.cpu(), probs, classes
        self.class_names, self.per_page, self.scale, self.title = list(class_names), per_page, scale, title
        names = dict.fromkeys(self.class_names[c] for c in sorted({int(c) for c in classes[:, 0]}))  # no repeats
        self.filter = widgets.Dropdown(options=["all", *names], description="top-1")
        self.page = widgets.IntSlider(min=0, max=0, description="page", continuous_update=False)
        self.caption, self.grid = widgets.HTML(), widgets.HTML()
        self.filter.observe(lambda change: self.render(reset=True), names="value")
        self.page.observe(lambda change: self.render(), names="value")
        self.widget = widgets.VBox([widgets.HBox([self.page, self.filter]), self.caption, self.grid])
        self.render(reset=True)

    @classmethod
    def from_teacher(cls, teacher, images, mean, std, class_names, **kwargs) -> "Top5Gallery":
        return cls(images, *top_k(teacher, images, mean, std), class_names, **kwargs)

    def chosen(self) -> list[int]:
        name = self.filter.value
        return [
            i for i in range(len(self.images)) if name == "all" or self.class_names[int(self.classes[i, 0])] == name
        ]

    def page_html(self, page: int = 0, chosen=None) -> str:
        chosen = list(range(len(self.images))) if chosen is None else chosen
        shown = chosen[page * self.per_page : (page + 1) * self.per_page]
        return top5_html(self.images[shown], self.probs[shown], self.classes[shown], self.class_names, self.scale)

    def render(self, reset: bool = False) -> None:
        chosen = self.chosen()
        pages = max(1, -(-len(chosen) // self.per_page))
        if reset:
            self.page.max, self.page.value = pages - 1, 0
        self.caption.value = (
            f"<b>{html.escape(self.title)}</b> page {self.page.value + 1} of {pages}, {len(chosen)} images"
        )
        self.grid.value = self.page_html(self.page.value, chosen)

    def _ipython_display_(self):
        """The widget, then page 1 as static HTML in a closed <details>: exported pages cannot run the widget
        (nbconvert loads its renderer from a CDN), so offline copies show the images there."""
        display(self.widget)
        pages = -(-len(self.images) // self.per_page)
        summary = f"static copy of page 1 of {pages} ({html.escape(self.title)}), for pages without widgets"
        display(HTML(f"<details><summary>{summary}</summary>{self.page_html(0)}</details>"))


def cost_figure(frame, x: str, title: str, x_title: str, series: str | None = None) -> go.Figure:
    """Seconds per synthesised image (left) and peak extra memory (right) against `x`, from rows of
    fdk.cost.synthesis_cost results (a DataFrame with x, seconds_per_image, peak_mib; optional `series`)."""
    figure = make_subplots(rows=1, cols=2, subplot_titles=("seconds per synthesised image", "peak extra memory (MiB)"))
    groups = frame.groupby(series) if series else [(None, frame)]
    for name, part in groups:
        label = str(name) if name is not None else "measured"
        figure.add_scatter(x=part[x], y=part["seconds_per_image"], mode="lines+markers", name=label, legendgroup=label,
                           row=1, col=1)  # fmt: skip
        figure.add_scatter(x=part[x], y=part["peak_mib"], mode="lines+markers", name=label, legendgroup=label,
                           showlegend=False, row=1, col=2)  # fmt: skip
    figure.update_xaxes(title_text=x_title)
    figure.update_layout(title=title, height=320, showlegend=series is not None)
    return figure


def test_card(size: int = 224, cells: int = 4) -> torch.Tensor:
    """A (3, size, size) uint8 card of numbered coloured cells: crops, zooms and flips are easy to read off."""
    card = Image.new("RGB", (size, size))
    draw, step = ImageDraw.Draw(card), size / cells
    for r in range(cells):
        for c in range(cells):
            colour = (40 + 200 * c // (cells - 1), 40 + 200 * r // (cells - 1), 200 - 150 * ((r + c) % 2))
            box = [c * step, r * step, (c + 1) * step - 1, (r + 1) * step - 1]
            draw.rectangle(box, fill=colour, outline=(255, 255, 255))
            draw.text((box[0] + step / 3, box[1] + step / 3), str(r * cells + c + 1), fill=(255, 255, 255),
                      font_size=int(step / 3))  # fmt: skip
    return torch.from_numpy(np.asarray(card).copy()).permute(2, 0, 1)
