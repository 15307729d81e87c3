"""Notebook views of segmentation (docs/method.md §12): images with a label map laid over them.

Same two paths as fdk.viz: images as static HTML (PNG data URIs, kept by papermill and nbval), charts
through `fdk.viz.show`. `overlay` blends a colour per class into the image; `SegmentationGallery` shows
synthetic batches with the teacher's predicted maps, a slider over snapshots (synthesis steps or
epochs), an opacity slider and the class legend. Predictions are computed once, when it is built.
"""

import html

import ipywidgets as widgets
import plotly.graph_objects as go
import torch
from IPython.display import display

from fdk.evaluate import normalized, predict
from fdk.viz import images_html

# 20 distinct colours (the first is for class 0, often background)
PALETTE = torch.tensor([
    [60, 60, 60], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
    [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [220, 190, 255],
    [170, 110, 40], [255, 250, 200], [128, 0, 0], [170, 255, 195], [128, 128, 0], [255, 215, 180], [0, 0, 128],
], dtype=torch.uint8)  # fmt: skip
IGNORED = torch.tensor([0, 0, 0], dtype=torch.uint8)  # unlabelled pixels (255) stay black in label maps


def colorize(maps: torch.Tensor) -> torch.Tensor:
    """(N, H, W) class maps -> (N, 3, H, W) uint8 colours (255 -> black)."""
    maps = maps.long().cpu()
    colours = PALETTE[maps.clamp(max=len(PALETTE) - 1) % len(PALETTE)]
    colours[maps == 255] = IGNORED
    return colours.permute(0, 3, 1, 2).contiguous()


def overlay(images: torch.Tensor, maps: torch.Tensor, opacity: float = 0.5) -> torch.Tensor:
    """uint8 images (N, 3, H, W) with their class maps (N, H, W) blended in at `opacity` (0: image only)."""
    blended = (1 - opacity) * images.cpu().float() + opacity * colorize(maps).float()
    return blended.round().clamp(0, 255).to(torch.uint8)


def legend_html(class_names) -> str:
    swatches = [
        f'<span style="display:inline-block;margin:1px 6px"><span style="display:inline-block;width:11px;'
        f'height:11px;background:rgb{tuple(PALETTE[i % len(PALETTE)].tolist())};vertical-align:middle"></span> '
        f"{html.escape(name)}</span>"
        for i, name in enumerate(class_names)
    ]
    return f'<div style="font-size:11px">{"".join(swatches)}</div>'


@torch.no_grad()
def predicted_maps(model, images: torch.Tensor, mean, std) -> torch.Tensor:
    """The model's argmax class map (N, H, W) for uint8 images, on the CPU."""
    return predict(model, normalized(images, model, mean, std), batch_size=64).argmax(1).cpu()


class SegmentationGallery:
    """Synthetic images and the teacher's predicted segmentation, one view per snapshot."""

    def __init__(self, snapshots, maps, class_names, slider_label="step", max_images=12, scale=3):
        self.snapshots = [(label, images.cpu()) for label, images in snapshots]
        self.maps, self.class_names = maps, list(class_names)
        self.max_images, self.scale = max_images, scale
        self.slider = widgets.IntSlider(0, min=0, max=len(snapshots) - 1, description=slider_label,
                                        continuous_update=False)  # fmt: skip
        self.opacity = widgets.FloatSlider(0.5, min=0.0, max=1.0, step=0.1, description="opacity",
                                           continuous_update=False)  # fmt: skip
        self.title, self.grid = widgets.HTML(), widgets.HTML()
        for control in (self.slider, self.opacity):
            control.observe(lambda change: self.render(), names="value")
        legend = widgets.HTML(legend_html(self.class_names))
        self.widget = widgets.VBox([widgets.HBox([self.slider, self.opacity]), self.title, self.grid, legend])
        self.widget.add_class("fdk-gallery")
        self.render()

    @classmethod
    def from_teacher(cls, snapshots, teacher, mean, std, class_names, **kwargs) -> "SegmentationGallery":
        maps = [predicted_maps(teacher, images, mean, std) for _, images in snapshots]
        return cls(snapshots, maps, class_names, **kwargs)

    def render(self) -> None:
        label, images = self.snapshots[self.slider.value]
        maps = self.maps[self.slider.value]
        n = min(self.max_images, len(images))
        blended = overlay(images[:n], maps[:n], self.opacity.value)
        shares = torch.bincount(maps[:n].flatten(), minlength=len(self.class_names))
        top = shares.argsort(descending=True)[:3].tolist()
        self.grid.value = images_html([(f"#{i}", blended[i]) for i in range(n)], self.scale)
        common = ", ".join(f"{self.class_names[c]} {100 * shares[c] / shares.sum():.0f}%" for c in top)
        self.title.value = f"<b>{html.escape(str(label))}</b>: {n} images; the teacher's pixels: {common}"

    def _ipython_display_(self):
        display(self.widget)


def iou_chart(rows: dict[str, list], class_names, title: str = "per-class IoU") -> go.Figure:
    """Grouped bars: per-class IoU (%) of each named model (None = class absent, drawn as 0)."""
    figure = go.Figure(layout=dict(title=title, barmode="group", height=320, yaxis_title="IoU %",
                                   margin=dict(l=50, r=10, t=40, b=80)))  # fmt: skip
    for name, ious in rows.items():
        figure.add_bar(name=name, x=list(class_names), y=[0.0 if v is None else v for v in ious])
    return figure
