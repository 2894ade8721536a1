"""Class-balanced repeat-factor sampling: the factors, the sampler, its sharding, the loader and the config key."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from helpers import noise_image

from detect_ft.config.schema import load_config
from detect_ft.data.dataset import DetectionDataset, build_loader, loader_sampler, set_epoch
from detect_ft.data.records import DatasetRecords, ImageRecord
from detect_ft.data.sampling import RepeatFactorSampler, repeat_factors, repeat_factors_line
from detect_ft.utils.errors import ConfigError


def _record(labels: list[int], crowd: list[bool] | None = None, path: str = "x.png", portrait: bool = False):
    width, height = (8, 16) if portrait else (16, 8)
    return ImageRecord(path, width, height, boxes=[[0, 0, 4, 4]] * len(labels), labels=labels, iscrowd=crowd)


def _class_records() -> list[ImageRecord]:
    """10 images: class 1 in images 0-7 (f = 0.8), class 2 in image 0 only (twice; f = 0.1), class 3 in
    images 1 and 8 (f = 0.2), image 2 with a crowd box of class 2 (not a training target), image 9 empty."""
    labels = [[1, 2, 2], [1, 3], [1, 2], [1], [1], [1], [1], [1], [3], []]
    records = [_record(image_labels) for image_labels in labels]
    records[2] = _record([1, 2], crowd=[False, True])
    return records


def test_repeat_factors_take_the_rarest_class_of_each_image():
    factors = repeat_factors(_class_records(), threshold=0.5)
    expected = [math.sqrt(0.5 / 0.1), math.sqrt(0.5 / 0.2), 1, 1, 1, 1, 1, 1, math.sqrt(0.5 / 0.2), 1]
    assert factors == pytest.approx(expected)
    assert repeat_factors(_class_records(), threshold=0.0) == [1.0] * 10
    assert repeat_factors([_record([]), _record([])], threshold=0.3) == [1.0, 1.0]
    assert repeat_factors([], threshold=0.3) == []
    line = repeat_factors_line(factors, 0.5)
    assert "3 of 10 images" in line and "2.24" in line and "train.repeat_threshold=0.5" in line
    assert repeat_factors_line([1.0] * 10, 0.0) == ""


def test_sampler_draws_rare_images_more_often_and_keeps_the_epoch_length():
    factors = [1.0] * 9 + [4.0]
    sampler = RepeatFactorSampler(factors, seed=3)
    counts: Counter[int] = Counter()
    for epoch in range(300):
        sampler.set_epoch(epoch)
        draw = list(sampler)
        assert len(draw) == len(sampler) == 10
        counts.update(draw)
    # Uniform shuffling gives image 9 a tenth of the draws; its factor 4 gives it 4/13.
    assert 0.25 < counts[9] / 3000 < 0.37
    assert all(0.05 < counts[i] / 3000 < 0.1 for i in range(9))


def test_sampler_is_deterministic_per_seed_and_epoch():
    factors = [1.0, 2.0, 1.0, 3.0, 1.0, 1.0, 1.5, 1.0]

    def draw(seed: int, epoch: int) -> list[int]:
        sampler = RepeatFactorSampler(factors, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert draw(0, 1) == draw(0, 1)
    assert draw(0, 1) != draw(0, 2)
    assert draw(0, 1) != draw(5, 1)


def test_ranks_take_disjoint_shards_of_one_draw():
    factors = [1.0] * 10 + [3.0]  # 11 images over 2 ranks: padded to 12 as DistributedSampler pads
    shards = []
    for rank in (0, 1):
        sampler = RepeatFactorSampler(factors, seed=7, num_replicas=2, rank=rank)
        sampler.set_epoch(4)
        shards.append(list(sampler))
        assert len(sampler) == 6
    whole = RepeatFactorSampler(factors, seed=7)
    whole.set_epoch(4)
    draw = list(whole)
    # Positions of the one draw, interleaved: rank 0 takes 0, 2, 4..., rank 1 takes 1, 3, 5...
    merged = [index for pair in zip(*shards) for index in pair]
    assert merged == draw + draw[:1]
    dropped = RepeatFactorSampler(factors, seed=7, num_replicas=2, rank=1, drop_last=True)
    assert len(dropped) == len(list(dropped)) == 5


def test_sampler_refuses_bad_factors_and_ranks():
    for factors in ([], [1.0, 0.0], [1.0, float("nan")]):
        with pytest.raises(ValueError, match="repeat factors"):
            RepeatFactorSampler(factors)
    with pytest.raises(ValueError, match="rank"):
        RepeatFactorSampler([1.0, 2.0], num_replicas=2, rank=2)


def _image_dataset(tmp_path, n: int = 10) -> DetectionDataset:
    records = []
    for i in range(n):
        portrait = i % 2 == 1
        path = noise_image(tmp_path / f"im{i}.png", *((8, 16) if portrait else (16, 8)), seed=i)
        records.append(_record([1 + (i == 0)], path=str(path), portrait=portrait))
    return DetectionDataset(DatasetRecords(records, ["common", "rare"]))


@pytest.mark.parametrize("grouping", [False, True])
def test_loader_with_repeat_factors_keeps_its_length_and_full_batches(tmp_path, grouping):
    dataset = _image_dataset(tmp_path)
    factors = repeat_factors(dataset.records.records, threshold=0.5)
    assert factors[0] > 1 and factors[1:] == [1.0] * 9
    loader = build_loader(
        dataset, batch_size=3, shuffle=True, workers=0, aspect_ratio_grouping=grouping, repeat_factors=factors
    )
    assert isinstance(loader_sampler(loader), RepeatFactorSampler)
    assert len(loader) == 4
    epochs = []
    for epoch in (0, 1, 0):
        set_epoch(loader, epoch)
        batches = [[tuple(image.shape) for image in images] for images, _ in loader]
        assert len(batches) == 4
        epochs.append(loader_sampler(loader).epoch_draw())
        if grouping:  # every batch full and of one orientation
            assert all(len(batch) == 3 and len(set(batch)) == 1 for batch in batches)
        else:
            assert sum(len(batch) for batch in batches) == 10
    assert epochs[0] == epochs[2] and epochs[0] != epochs[1]
    with pytest.raises(ValueError, match="shuffle"):
        build_loader(dataset, batch_size=3, shuffle=False, workers=0, repeat_factors=factors)
    with pytest.raises(ValueError, match="9 factors"):
        build_loader(dataset, batch_size=3, shuffle=True, workers=0, repeat_factors=factors[:9])


@pytest.mark.parametrize("value", ["1.5", "-0.1"])
def test_repeat_threshold_out_of_range_is_one_config_error_line(value):
    with pytest.raises(ConfigError, match=r"train.repeat_threshold.*\[0, 1\]") as info:
        load_config(None, [f"train.repeat_threshold={value}"])
    assert "\n" not in str(info.value)
    assert load_config(None, ["train.repeat_threshold=0.3"]).train.repeat_threshold == 0.3
    assert load_config(None, []).train.repeat_threshold == 0.0


def test_distributed_loader_with_repeat_factors_shards_by_the_process_group(tmp_path):
    import torch.distributed as dist

    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        dataset = _image_dataset(tmp_path)
        factors = repeat_factors(dataset.records.records, threshold=0.5)
        loader = build_loader(
            dataset, batch_size=3, shuffle=True, workers=0, distributed=True, seed=2, repeat_factors=factors
        )
        sampler = loader_sampler(loader)
        assert isinstance(sampler, RepeatFactorSampler) and (sampler.num_replicas, sampler.rank) == (1, 0)
        set_epoch(loader, 3)
        alone = RepeatFactorSampler(factors, seed=2)
        alone.set_epoch(3)
        assert list(sampler) == list(alone)
    finally:
        dist.destroy_process_group()
