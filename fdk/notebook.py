"""The walkthrough notebooks' setup: one call turns the papermill parameters into what every notebook uses.

    nb = fdk.notebook.setup("01_bn_inversion", SMOKE, TEACHER, DATA, DEVICE, OUT, SEED)
    nb.smoke, nb.device, nb.teacher, nb.inputs, nb.test, nb.out_dir, nb.data

SMOKE None follows FDK_SMOKE=1 in the environment (nbval cannot pass parameters, CI sets the variable);
DATA None follows FDK_DATA, "" means no real data (the notebooks then measure agreement with the teacher);
smoke runs evaluate on a fifth of the test split, every class equally.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from fdk.data import ImageTensors, SegTensors
from fdk.inputs import InputSpec
from fdk.models import EMBEDDED_TEACHER, load_model
from fdk.segdata import find_task_split
from fdk.utils import ROOT, resolve_device, seed_everything

SMOKE_TEST_STRIDE = 5  # smoke runs evaluate on 1 test image in 5 (2,000 of CIFAR's 10,000)


@dataclass
class Notebook:
    smoke: bool  # the small CPU version (minutes) instead of the paper-size run
    device: torch.device
    teacher: torch.nn.Module  # in eval mode, on `device`
    inputs: InputSpec  # the teacher's input contract: normalisation, size, class names
    test: ImageTensors | SegTensors | None  # the real test split when DATA holds it
    out_dir: Path  # where this notebook's runs go
    data: str = ""  # the resolved data root ("" when there is none)


def resolve_smoke(smoke: bool | None) -> bool:
    return os.environ.get("FDK_SMOKE", "0") == "1" if smoke is None else bool(smoke)


def runs_dir(out: str = "") -> Path:
    """Where notebooks write their runs; "" means runs/notebooks in the repository."""
    return Path(out) if out else ROOT / "runs" / "notebooks"


def setup(name: str, smoke=None, teacher: str = "", data=None, device="auto", out: str = "", seed: int = 0) -> Notebook:
    """Resolve a notebook's parameters, seed everything, load the teacher and (when present) real test data."""
    smoke = resolve_smoke(smoke)
    data = os.environ.get("FDK_DATA", "") if data is None else data
    device = resolve_device(device)
    seed_everything(seed)
    model = load_model(teacher or EMBEDDED_TEACHER).to(device).eval()
    test = find_task_split(data, model.input_spec.name, "test")
    if isinstance(test, ImageTensors) and smoke:  # every 5th image: sorted by class, so all stay equal in number
        test = ImageTensors(test.images[::SMOKE_TEST_STRIDE], test.labels[::SMOKE_TEST_STRIDE], test.classes)
    elif isinstance(test, SegTensors) and smoke:
        test = SegTensors(test.images[::SMOKE_TEST_STRIDE], test.masks[::SMOKE_TEST_STRIDE], test.classes)
    nb = Notebook(smoke, device, model, model.input_spec, test, runs_dir(out) / name, data)
    split = "none" if test is None else f"{len(test):,} images" + (" (every 5th, smoke)" if smoke else "")
    print(f"device {device}, smoke={smoke}, teacher {Path(model.source_file).name} ({model.input_spec.name}), "
          f"real test split: {split}")  # fmt: skip
    return nb


def export_html(notebook, html_path=None) -> Path:
    """An executed notebook as one offline HTML page: nbconvert's export with plotly.js added once
    (notebooks themselves never carry it, fdk.viz)."""
    import nbformat
    from nbconvert import HTMLExporter
    from plotly.offline import get_plotlyjs

    notebook = Path(notebook)
    html_path = Path(html_path) if html_path else notebook.with_suffix(".html")
    body, _ = HTMLExporter().from_notebook_node(nbformat.read(notebook, as_version=4))
    body = body.replace("</head>", f'<script type="text/javascript">{get_plotlyjs()}</script></head>', 1)
    html_path.write_text(body)
    return html_path
