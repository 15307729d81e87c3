"""Notebook 04's views (ImageNet scaling): the teacher's top-5 under synthetic images, cost charts, a test card.

`Top5Gallery` pages through images with the teacher's five most likely classes under each; in a live
kernel it is a widget (a page slider and a top-1 class filter), and its mimebundle also carries the first
page as static HTML, which nbconvert shows where no widget state was saved (executed and exported
notebooks). Like fdk.viz, callbacks only index predictions computed once.
"""

import base64
import contextlib
import ctypes
import html

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import torch
from PIL import Image, ImageDraw
from plotly.subplots import make_subplots

from fdk.evaluate import normalized, predict
from fdk.viz import png_bytes

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)


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
        found = sorted({int(c) for c in classes[:, 0]})
        self.filter = widgets.Dropdown(options=["all"] + [self.class_names[c] for c in found], description="top-1")
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
        return [i for i in range(len(self.images)) if name == "all" or self.class_names[self.classes[i, 0]] == name]

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

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.widget._repr_mimebundle_(**kwargs)  # the live widget where a widget manager runs
        pages = -(-len(self.images) // self.per_page)
        static = f"<p><b>{html.escape(self.title)}</b> page 1 of {pages} (static copy; the widget pages)</p>"
        bundle["text/html"] = static + self.page_html(0)
        return bundle


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


@contextlib.contextmanager
def freed_memory_returned():
    """Make glibc hand freed blocks of 128 KiB or more straight back to the OS inside the block.

    fdk.cost measures CPU peak memory as the resident set's high-water mark above what the process
    held before; glibc keeps freed memory for reuse, so after a warm-up call that rise is close to 0.
    With this, the resident set follows the live tensors and the rise is what a call needs. No effect
    on CUDA (the allocator's own peak is used) or outside glibc; restores glibc's usual thresholds after.
    Yields whether it took effect."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        active = bool(libc.mallopt(_M_MMAP_THRESHOLD, 128 * 1024)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 128 * 1024))
    except (OSError, AttributeError):
        libc, active = None, False
    try:
        yield active
    finally:
        if active:
            libc.mallopt(_M_MMAP_THRESHOLD, 32 * 2**20)  # glibc's dynamic threshold tops out here
            libc.mallopt(_M_TRIM_THRESHOLD, 64 * 2**20)
