import json

import numpy as np
import pytest
import torch

from fdk.checkpoint import atomic_save, load_checkpoint, load_state_dict_file, read_metadata, save_weights, write_json
from fdk.models import create_model, load_model, load_weights
from fdk.utils import FdkError


def _same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_upstream_pth_round_trip(tmp_path):
    """train_scratch.py's format: {'epoch', 'arch', 'state_dict', 'best_acc1', 'optimizer', ...}."""
    model = create_model("wrn16_1")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    path = tmp_path / "cifar10_wrn16_1.pth"
    torch.save(
        {
            "epoch": 199,
            "arch": "wrn16_1",
            "state_dict": model.state_dict(),
            "best_acc1": np.float64(91.1),  # numpy scalars occur in older files
            "optimizer": optimizer.state_dict(),
        },
        path,
    )
    loaded = load_model(path, arch="wrn16_1")
    assert _same(loaded, model)


def test_module_prefix_is_stripped(tmp_path):
    model = create_model("resnet8")
    path = tmp_path / "ddp.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in model.state_dict().items()}}, path)
    assert _same(load_model(path, arch="resnet8"), model)


def test_safetensors_round_trip_with_metadata(tmp_path):
    model = create_model("resnet8", 100)
    path = tmp_path / "w.safetensors"
    save_weights(model.state_dict(), path, arch="resnet8", num_classes=100, dataset="cifar100", test_top1=12.5)
    meta = read_metadata(path)
    assert meta == {"arch": "resnet8", "num_classes": 100, "dataset": "cifar100", "test_top1": 12.5}
    loaded = load_model(path)  # arch and classes come from the metadata
    assert _same(loaded, model) and loaded.input_spec.name == "cifar100" and loaded.source_file == str(path)


def test_input_contract_round_trips_through_the_metadata(tmp_path):
    from fdk.inputs import InputSpec

    spec = InputSpec(name="mine", num_classes=5, image_size=24, mean=(0.1, 0.2, 0.3), std=(0.5, 0.5, 0.5),
                     classes=("a", "b", "c", "d", "e"))  # fmt: skip
    path = tmp_path / "w.safetensors"
    save_weights(create_model("resnet8", 5).state_dict(), path, arch="resnet8", **spec.to_metadata())
    assert load_model(path).input_spec == spec


def test_mismatch_error_names_keys_and_suggests_architecture(tmp_path):
    path = tmp_path / "wrn40_2_c100.pth"
    torch.save({"state_dict": create_model("wrn40_2", 100).state_dict()}, path)
    with pytest.raises(FdkError) as info:
        load_model(path, arch="wrn16_2", num_classes=100)
    text = str(info.value)
    assert "missing" not in text  # wrn16_2's blocks are a subset of wrn40_2's
    assert "unexpected 144 keys in modules block1.layer.2.bn1, block1.layer.2.conv1" in text
    assert "wrn40_2 with num_classes=100" in text and "\n" not in text  # one line


def test_shape_mismatch_reports_shapes(tmp_path):
    state = create_model("resnet20", 100).state_dict()
    with pytest.raises(FdkError) as info:
        load_weights(create_model("resnet20", 10), state, name="resnet20")
    text = str(info.value)
    assert "fc.weight: file (100, 64) vs model (10, 64)" in text
    assert "resnet20 with num_classes=100" in text


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "x.pth"
    torch.save({"hello": 1}, path)
    with pytest.raises(FdkError, match="holds no state dict"):
        load_state_dict_file(path)


def test_missing_file():
    with pytest.raises(FdkError, match="does not exist"):
        load_state_dict_file("/nonexistent/teacher.pth")


class Custom:
    """An arbitrary pickled object: weights_only loading must refuse it."""


def test_weights_only_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "obj": Custom()}, path)
    with pytest.raises(FdkError, match="weights_only=True"):
        load_checkpoint(path)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_and_corrupt_files_are_clear_errors(tmp_path, suffix):
    path = tmp_path / f"w{suffix}"
    state = create_model("resnet8").state_dict()
    if suffix == ".pth":
        torch.save({"state_dict": state}, path)
    else:
        save_weights(state, path, arch="resnet8")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FdkError, match="truncated or corrupt"):
        load_state_dict_file(path)
    path.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(FdkError, match="truncated or corrupt"):
        load_state_dict_file(path)


def test_atomic_save_keeps_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_save({"a": torch.ones(2)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        atomic_save({"a": Unpicklable()}, path)
    assert torch.equal(load_checkpoint(path)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temp file left behind


def test_write_json_makes_the_folder_and_keeps_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "results" / "bench.json"
    write_json({"top1": 0.5, "rows": [1, 2]}, path)
    assert json.loads(path.read_text()) == {"top1": 0.5, "rows": [1, 2]}
    assert path.read_text().endswith("}\n")
    with pytest.raises(TypeError):
        write_json({"top1": object()}, path)
    assert json.loads(path.read_text())["top1"] == 0.5
    assert [p.name for p in path.parent.iterdir()] == ["bench.json"]  # no temp file left behind
