"""The README's examples run as written."""

import re

from tests.conftest import REPO


def readme_block(heading: str) -> str:
    """The first ```python block under a README heading."""
    text = (REPO / "README.md").read_text()
    section = text.split(heading, 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"no python block under {heading!r}"
    return match.group(1)


def test_bring_your_own_teacher_example_runs(tmp_path, monkeypatch):
    code = readme_block("### Bring your own teacher")
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    result, inputs = scope["result"], scope["inputs"]
    assert result.summary["images_synthesized"] > 0 and result.bank.images.shape[1:] == (3, 24, 24)
    assert result.student.fc.out_features == inputs.num_classes == 5
    run_json = (tmp_path / "runs" / "my-teacher" / "run.json").read_text()
    assert '"mean": [' in run_json and "0.25" in run_json  # the teacher's own contract is recorded


def test_python_api_example_runs(tmp_path, monkeypatch):
    code = readme_block("### Python")
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["result"].summary["images_synthesized"] > 0
