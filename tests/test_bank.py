import torch

from fdk.augment import quantize
from fdk.bank import SyntheticBank


def batch(n, value=None):
    if value is None:
        return torch.randint(0, 256, (n, 3, 4, 4), dtype=torch.uint8)
    return torch.full((n, 3, 4, 4), value, dtype=torch.uint8)


def test_uint8_round_trip_of_quantised_images():
    x = torch.rand(10, 3, 4, 4)
    bank = SyntheticBank()
    bank.add(quantize(x))
    assert bank.images.dtype == torch.uint8 and len(bank) == 10
    assert torch.equal(bank.images, (x * 255).to(torch.uint8))
    assert (bank.images.float() / 255 - x).abs().max() < 1 / 255


def test_grows_and_keeps_order():
    bank = SyntheticBank()
    for v in range(20):
        bank.add(batch(7, v))
    assert len(bank) == 140
    assert bank.images[:, 0, 0, 0].tolist() == [v for v in range(20) for _ in range(7)]


def test_sampling_is_shuffled_passes_without_replacement():
    bank = SyntheticBank()
    bank.add(torch.arange(12, dtype=torch.uint8).view(12, 1, 1, 1).expand(12, 3, 4, 4).contiguous())
    seen = torch.cat([bank.sample(4)[:, 0, 0, 0] for _ in range(3)])
    assert sorted(seen.tolist()) == list(range(12))  # one pass covers every image exactly once
    assert seen.tolist() != list(range(12))  # shuffled
    last = bank.sample(5)  # a new pass starts when the old one is used up
    assert len(last) == 5
    tail = bank.sample(10)  # a pass's last batch may be short, as with a DataLoader
    assert len(tail) == 7


def test_add_starts_a_fresh_pass():
    bank = SyntheticBank()
    bank.add(batch(8, 1))
    bank.sample(4)
    bank.add(batch(8, 2))
    values = torch.cat([bank.sample(4)[:, 0, 0, 0] for _ in range(4)])
    assert sorted(values.tolist()) == [1] * 8 + [2] * 8


def test_capacity_keeps_the_newest():
    bank = SyntheticBank(capacity=10)
    for v in range(5):
        bank.add(batch(4, v))
    assert len(bank) == 10
    assert bank.images[:, 0, 0, 0].tolist() == [2, 2, 3, 3, 3, 3, 4, 4, 4, 4]


def test_state_round_trip_continues_the_same_pass():
    torch.manual_seed(0)
    bank = SyntheticBank()
    bank.add(batch(20))
    bank.sample(6)
    state = bank.state_dict()
    expected = bank.sample(6)
    restored = SyntheticBank()
    restored.load_state_dict(state)
    assert torch.equal(restored.images, bank.images) and torch.equal(restored.sample(6), expected)


def test_kd_batch_is_normalised_float(tmp_path):
    bank = SyntheticBank()
    bank.add(batch(16, 255))
    x = bank.kd_batch(8, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert x.shape == (8, 3, 4, 4) and x.dtype == torch.float32
    assert set(x.unique().tolist()) <= {-1.0, 1.0}  # 255 -> 1.0, zero padding from the crop -> -1.0
    grid = bank.save_grid(tmp_path / "grid.png", n=16)
    assert grid.exists()
    assert bank.export_png(tmp_path / "pngs") == 16 and len(list((tmp_path / "pngs").iterdir())) == 16


def test_file_backed_state_appends_only_new_images(tmp_path):
    torch.manual_seed(0)
    bank = SyntheticBank(file=tmp_path / "bank.u8")
    bank.add(batch(5))
    state1 = bank.state_dict()
    assert "images" not in state1 and (tmp_path / "bank.u8").stat().st_size == 5 * 48
    bank.add(batch(3))
    bank.sample(2)
    state2 = bank.state_dict()
    assert (tmp_path / "bank.u8").stat().st_size == 8 * 48  # 3 more images appended, nothing rewritten
    expected = bank.sample(4)
    restored = SyntheticBank(file=tmp_path / "bank.u8")
    restored.load_state_dict(state2)
    assert torch.equal(restored.images, bank.images) and torch.equal(restored.sample(4), expected)
    older = SyntheticBank(file=tmp_path / "bank.u8")
    older.load_state_dict(state1)  # an older checkpoint reads only its own 5 images
    assert torch.equal(older.images, bank.images[:5])
    older.add(batch(1, 7))
    older.state_dict()  # the next save overwrites what the older checkpoint did not count
    assert (tmp_path / "bank.u8").stat().st_size == 6 * 48


def test_file_backed_capacity_resumes_the_newest(tmp_path):
    bank = SyntheticBank(capacity=6, file=tmp_path / "bank.u8")
    for v in range(3):
        bank.add(batch(4, v))  # 12 added, 6 kept, none flushed yet
    state = bank.state_dict()
    assert state["total"] == 12 and state["size"] == 6
    restored = SyntheticBank(capacity=6, file=tmp_path / "bank.u8")
    restored.load_state_dict(state)
    assert restored.images[:, 0, 0, 0].tolist() == [1, 1, 2, 2, 2, 2]


def test_truncated_bank_file_is_a_clear_error(tmp_path):
    import pytest

    bank = SyntheticBank(file=tmp_path / "bank.u8")
    bank.add(batch(4))
    state = bank.state_dict()
    (tmp_path / "bank.u8").write_bytes(b"\0" * 50)
    from fdk.utils import FdkError

    with pytest.raises(FdkError, match="truncated"):
        SyntheticBank(file=tmp_path / "bank.u8").load_state_dict(state)
