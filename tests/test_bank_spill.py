"""The bank's spill tiers on the CPU: here the "device" is the CPU too, so what is tested is the tier logic
(which image lives where, sampling across tiers, checkpoints), not the copies."""

import gc

import pytest
import torch

import fdk.bank
from fdk.bank import SyntheticBank, bank_bytes
from fdk.utils import FdkError

SIZES = (3, 1, 5, 4)  # 13 images in odd batches: the device tier (5) fills in the middle of the third
PER_IMAGE = 3 * 4 * 4


def numbered(start, n):
    """n images whose every byte is their global index, start..start+n-1."""
    return torch.arange(start, start + n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 4, 4).contiguous()


def fill(bank, sizes=SIZES, start=0):
    for n in sizes:
        bank.add(numbered(start, n))
        start += n
    return bank


def ids(images):
    return images[:, 0, 0, 0].tolist()


@pytest.fixture(params=["host", "disk"])
def spill(request):
    return request.param


def test_logical_order_is_oldest_first_across_tiers(spill):
    bank = fill(SyntheticBank(device_images=5, spill=spill))
    assert (len(bank), bank.on_device, bank.spilled) == (13, 5, 8)
    assert ids(bank.images) == list(range(13))
    assert ids(bank.newest(4)) == [9, 10, 11, 12] and ids(bank.newest(10)) == list(range(3, 13))
    memory = bank.memory()
    assert memory["device"] == 5 * PER_IMAGE  # the device tier grows to device_images, not past it
    assert memory["host" if spill == "host" else "disk"] >= 8 * PER_IMAGE
    assert memory["disk" if spill == "host" else "host"] == 0
    bank.close()


def test_a_pass_is_a_permutation_and_matches_the_device_only_bank(spill):
    """On the CPU both draw the pass with the same generator, so the tiers must not change a single batch."""
    torch.manual_seed(3)
    tiered = fill(SyntheticBank(device_images=5, spill=spill))
    batches = [ids(tiered.sample(4)) for _ in range(4)]
    assert [len(b) for b in batches] == [4, 4, 4, 1]  # a pass's last batch is short, as before
    assert sorted(sum(batches, [])) == list(range(13))
    torch.manual_seed(3)
    plain = fill(SyntheticBank())
    assert [ids(plain.sample(4)) for _ in range(4)] == batches
    tiered.close()


def test_every_image_is_sampled_equally_often():
    torch.manual_seed(0)
    bank = fill(SyntheticBank(device_images=5))
    passes, counts, first = 600, torch.zeros(13), torch.zeros(13)
    for _ in range(passes):
        for step in range(4):
            batch = torch.tensor(ids(bank.sample(4)))
            counts += torch.bincount(batch, minlength=13)
            if step == 0:
                first += torch.bincount(batch, minlength=13)
    assert counts.tolist() == [passes] * 13  # passes without replacement: each image once per pass
    expected = passes * 4 / 13  # and the first batch of a pass favours neither tier
    assert (first - expected).abs().max() < 0.25 * expected


def test_grid_and_png_export_across_tiers(tmp_path, spill, monkeypatch):
    monkeypatch.setattr(fdk.bank, "CHUNK_BYTES", 4 * PER_IMAGE)  # export in chunks of 4 images
    bank = fill(SyntheticBank(device_images=5, spill=spill))
    assert bank.save_grid(tmp_path / "grid.png", n=6).exists()
    assert bank.save_grid(tmp_path / "old.png", n=7, newest=False).exists()
    assert bank.export_png(tmp_path / "pngs") == 13
    from PIL import Image

    assert [Image.open(tmp_path / "pngs" / f"{i}.png").getpixel((0, 0)) for i in (0, 4, 5, 12)] == [
        (0, 0, 0), (4, 4, 4), (5, 5, 5), (12, 12, 12)
    ]  # fmt: skip
    bank.close()


def test_kd_batch_takes_an_augmentation(spill):
    bank = fill(SyntheticBank(device_images=5, spill=spill))
    x = bank.kd_batch(13, (0.0,) * 3, (1.0,) * 3, augment=lambda x: x)
    assert sorted((x[:, 0, 0, 0] * 255).round().int().tolist()) == list(range(13))
    bank.close()


@pytest.mark.parametrize("with_file", [True, False])
def test_resume_continues_the_same_batches(tmp_path, spill, with_file, monkeypatch):
    monkeypatch.setattr(fdk.bank, "CHUNK_BYTES", 2 * PER_IMAGE)  # flush and load 2 images at a time
    file = tmp_path / "bank.u8" if with_file else None
    tiers = {"device_images": 5, "spill": spill}
    if spill == "disk":
        tiers["spill_file"] = tmp_path / "spill.u8"
    torch.manual_seed(0)
    bank = fill(SyntheticBank(file=file, **tiers), SIZES[:2])
    bank.sample(3)
    bank.state_dict()  # the first flush: 4 images, all on the device
    fill(bank, SIZES[2:], start=4)
    bank.sample(2)
    state, rng = bank.state_dict(), torch.get_rng_state()  # the second flush appends 9, read from both tiers
    if with_file:
        assert "images" not in state and file.read_bytes() == bank.images.numpy().tobytes()
    expected = [ids(bank.sample(5)) for _ in range(5)]  # the rest of this pass and a new one
    if spill == "disk":
        tiers["spill_file"] = tmp_path / "spill2.u8"
    restored = SyntheticBank(file=file, **tiers)
    restored.load_state_dict(state)
    torch.set_rng_state(rng)  # a run's checkpoint restores it (new passes draw from it)
    assert (restored.on_device, restored.spilled) == (5, 8)  # the tiers are the constructor's, not the state's
    assert ids(restored.images) == list(range(13))
    assert [ids(restored.sample(5)) for _ in range(5)] == expected
    bank.close(), restored.close()


def test_temporary_disk_spill_is_removed_on_close_and_collection(tmp_path):
    bank = fill(SyntheticBank(device_images=5, spill="disk"))
    path = bank._spill.path
    assert path.exists() and path.stat().st_size >= 8 * PER_IMAGE
    bank.close()
    assert not path.exists() and len(bank) == 0 and bank.memory() == {"device": 0, "host": 0, "disk": 0}
    bank = fill(SyntheticBank(device_images=5, spill="disk"))
    path = bank._spill.path
    del bank
    gc.collect()
    assert not path.exists()
    with fill(SyntheticBank(device_images=0, spill="disk", spill_file=tmp_path / "named.u8")) as bank:
        assert ids(bank.images) == list(range(13))
    assert (tmp_path / "named.u8").exists()  # a named spill file is the caller's


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"spill": "gpu"}, "unknown spill 'gpu'; use spill='host'"),
        ({"capacity": 10, "device_images": 5}, "capacity with device_images is not supported"),
        ({"device_images": -1}, "negative"),
        ({"spill_file": "x.u8"}, "only used with spill='disk'"),
    ],
)
def test_bad_tier_settings_are_one_line_errors(kwargs, match):
    with pytest.raises(FdkError, match=match) as error:
        SyntheticBank(**kwargs)
    assert "\n" not in str(error.value)


def test_bank_bytes():
    assert bank_bytes(1, (3, 224, 224)) == 150_528 and bank_bytes(56_320, (3, 32, 32)) == 173_015_040
