"""DetectionDataset, collate and loaders on tiny images written in tmp_path."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch.utils.data import SequentialSampler

from detect_ft.data.dataset import (
    DetectionDataset,
    GroupedBatchSampler,
    build_loader,
    collate_detection,
    image_to_tensor,
    loader_sampler,
    set_epoch,
)
from detect_ft.data.records import DatasetRecords, ImageRecord
from detect_ft.data.transforms import build_transform
from detect_ft.utils.errors import DataError


def _write(path, width: int, height: int, value: int) -> str:
    image = np.full((height, width, 3), value, np.uint8)
    image[: height // 2, : width // 2] = (255, 0, 0)  # red top-left quarter, written as RGB -> BGR below
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return str(path)


def _records(tmp_path, n: int = 8) -> DatasetRecords:
    """``n`` PNGs alternating landscape (80x48) and portrait (48x80); every third one is background."""
    records = []
    for i in range(n):
        width, height = (80, 48) if i % 2 == 0 else (48, 80)
        path = _write(tmp_path / f"im{i}.png", width, height, 10 * i)
        if i % 3 == 2:
            records.append(ImageRecord(path, width, height, image_id=100 + i))
            continue
        records.append(
            ImageRecord(
                path,
                width,
                height,
                boxes=[[2, 2, 30, 30], [10, 12, 40, 44], [0, 0, width, height]],
                labels=[1, 2, 1],
                iscrowd=[False, False, True],
                image_id=100 + i,
            )
        )
    return DatasetRecords(records, ["cat", "dog"], source=str(tmp_path))


def test_item_shapes_dtypes_and_crowd_exclusion(tmp_path) -> None:
    dataset = DetectionDataset(_records(tmp_path))
    image, target = dataset[0]
    assert image.dtype == torch.float32 and image.shape == (3, 48, 80)
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert torch.allclose(image[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))  # decoded as RGB
    assert target["boxes"].dtype == torch.float32 and target["boxes"].shape == (2, 4)
    assert target["labels"].dtype == torch.int64 and target["labels"].tolist() == [1, 2]  # crowd box left out
    assert target["image_id"].dtype == torch.int64 and target["image_id"].ndim == 0
    assert int(target["image_id"]) == 100
    assert dataset[1][0].shape == (3, 80, 48)


def test_background_image_has_empty_targets(tmp_path) -> None:
    dataset = DetectionDataset(_records(tmp_path), build_transform("light", train=True))
    image, target = dataset[2]
    assert image.shape == (3, 48, 80)
    assert target["boxes"].shape == (0, 4) and target["boxes"].dtype == torch.float32
    assert target["labels"].shape == (0,) and target["labels"].dtype == torch.int64


def test_size_mismatch_is_a_data_error(tmp_path) -> None:
    path = _write(tmp_path / "odd.png", 40, 30, 0)
    dataset = DetectionDataset(DatasetRecords([ImageRecord(path, 30, 40)], ["a"]))
    with pytest.raises(DataError, match="odd.png"):
        dataset[0]


def test_image_to_tensor_layout() -> None:
    array = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    tensor = image_to_tensor(array)
    assert tensor.shape == (3, 2, 3)
    assert torch.equal(tensor * 255, torch.from_numpy(array).permute(2, 0, 1).float())


def test_collate_keeps_lists(tmp_path) -> None:
    dataset = DetectionDataset(_records(tmp_path))
    images, targets = collate_detection([dataset[0], dataset[1]])
    assert isinstance(images, list) and isinstance(targets, list)
    assert [im.shape for im in images] == [(3, 48, 80), (3, 80, 48)]
    assert [int(t["image_id"]) for t in targets] == [100, 101]
    assert collate_detection([]) == ([], [])


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("n,batch_size", [(8, 3), (7, 2), (5, 4), (1, 2)])
def test_grouped_batch_sampler_batches_one_orientation(n: int, batch_size: int, drop_last: bool) -> None:
    group_ids = [i % 2 if i < 5 else 0 for i in range(n)]
    sampler = GroupedBatchSampler(SequentialSampler(range(n)), group_ids, batch_size, drop_last=drop_last)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    assert all(len(batch) == batch_size for batch in batches)
    assert all(len({group_ids[i] for i in batch}) == 1 for batch in batches)
    covered = {i for batch in batches for i in batch}
    if not drop_last:
        assert covered == set(range(n))


def test_loader_with_grouping_batches_same_orientation(tmp_path) -> None:
    dataset = DetectionDataset(_records(tmp_path, n=10), build_transform("light", train=True))
    loader = build_loader(dataset, batch_size=2, shuffle=True, workers=0, aspect_ratio_grouping=True, seed=1)
    assert len(loader) == 5
    count = 0
    for images, targets in loader:
        assert len({tuple(im.shape) for im in images}) == 1  # both landscape or both portrait
        count += 1
    assert count == 5


def test_loader_with_two_workers_is_reproducible(tmp_path) -> None:
    records = _records(tmp_path, n=8)

    def run(seed: int) -> list[tuple[int, list[float]]]:
        # A fresh transform each run: albumentations draws its unseeded state from the OS, so equal runs
        # prove that the loader seeded it.
        dataset = DetectionDataset(records, build_transform("strong", train=True))
        loader = build_loader(dataset, batch_size=3, shuffle=True, workers=2, seed=seed)
        assert loader.persistent_workers and loader.num_workers == 2
        out = []
        for _ in range(2):
            for images, targets in loader:
                out += [(int(t["image_id"]), t["boxes"].flatten().tolist()) for t in targets]
                assert all(im.dtype == torch.float32 and im.shape[0] == 3 for im in images)
        return out

    first, second = run(seed=3), run(seed=3)
    assert len(first) == 16
    assert first == second
    assert run(seed=4) != first  # the seed drives shuffling and augmentation


def test_unshuffled_loader_keeps_order(tmp_path) -> None:
    dataset = DetectionDataset(_records(tmp_path, n=5))
    loader = build_loader(dataset, batch_size=2, shuffle=False, workers=0, drop_last=True)
    ids = [int(t["image_id"]) for _, targets in loader for t in targets]
    assert ids == [100, 101, 102, 103]


def test_distributed_loader_exposes_sampler_for_set_epoch(tmp_path) -> None:
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        dataset = DetectionDataset(_records(tmp_path, n=12))
        for grouping in (False, True):
            loader = build_loader(
                dataset, batch_size=2, shuffle=True, workers=0, distributed=True, aspect_ratio_grouping=grouping
            )
            sampler = loader_sampler(loader)
            assert isinstance(sampler, torch.utils.data.distributed.DistributedSampler)
            orders = []
            for epoch in (0, 1, 0):
                set_epoch(loader, epoch)
                orders.append(list(sampler))
            assert orders[0] == orders[2] and orders[0] != orders[1]
    finally:
        dist.destroy_process_group()


@pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")  # torchvision 0.29's decoders
def test_bench_reference_pipeline_matches_the_dataset_contract(tmp_path) -> None:
    """tools/bench_data.py's torchvision pipeline yields what DetectionDataset yields, so the timing compares like with like."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("bench_data", Path(__file__).parents[1] / "tools" / "bench_data.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    records = _records(tmp_path, n=3)
    for record in records.records:  # the reference decodes JPEG only, like the raccoon photos
        jpeg = str(Path(record.image_path).with_suffix(".jpg"))
        cv2.imwrite(jpeg, cv2.imread(record.image_path))
        record.image_path = jpeg
    reference = bench.TorchvisionDataset(records)
    for index in range(3):
        image, target = reference[index]
        expected_image, expected_target = DetectionDataset(records)[index]
        assert type(image) is torch.Tensor and image.dtype == torch.float32 and image.shape == expected_image.shape
        assert target["boxes"].shape[1] == 4 and len(target["boxes"]) == len(target["labels"])
        assert len(target["labels"]) <= len(expected_target["labels"])  # crowd boxes excluded there too


def _truncate(path) -> None:
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])


def _jpeg_records(tmp_path, n: int = 4) -> DatasetRecords:
    rng = np.random.default_rng(0)
    records = []
    for i in range(n):
        path = tmp_path / f"j{i}.jpg"
        cv2.imwrite(str(path), rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))  # noise: long enough to cut
        records.append(ImageRecord(str(path), 64, 48, [[2, 2, 30 + i, 30]], [1], image_id=i + 1))
    return DatasetRecords(records, ["cat"], source=str(tmp_path))


def test_a_truncated_image_found_while_training_follows_the_policy(tmp_path, caplog) -> None:
    records = _jpeg_records(tmp_path)
    _truncate(records.records[1].image_path)  # its header is intact: only decoding finds it
    assert cv2.imread(records.records[1].image_path) is not None  # OpenCV alone would train on grey filling
    with pytest.raises(DataError, match=r"j1.jpg is truncated.*data.on_unreadable_image=drop"):
        DetectionDataset(records)[1]
    # through a worker process the error is still one line naming the file
    loader = build_loader(DetectionDataset(records), batch_size=4, shuffle=False, workers=1)
    with pytest.raises(DataError) as info:
        next(iter(loader))
    assert "\n" not in str(info.value) and "j1.jpg is truncated" in str(info.value)

    dropping = DetectionDataset(records, on_unreadable="drop")
    with warnings.catch_warnings(), caplog.at_level(logging.WARNING, logger="detect_ft.data.dataset"):
        warnings.simplefilter("error")  # one log line, never a Python warning with its source line
        _, target = dropping[1]
        assert target["boxes"][0, 2] == 32 and int(target["image_id"]) == 3  # the next image (j2) serves instead
        assert len(dropping) == 4 and [int(dropping[i][1]["boxes"][0, 2]) for i in (0, 1, 2, 3)] == [30, 32, 32, 33]
    (line,) = [record.getMessage() for record in caplog.records]
    assert line.startswith("unreadable_image: ") and "j1.jpg: is truncated" in line and "-> dropped image" in line
    assert [(Path(f.file).name, f.action) for f in dropping.findings()] == [("j1.jpg", "dropped image")]


def test_an_image_failing_while_training_is_reported_once_over_workers_and_epochs(tmp_path) -> None:
    records = _jpeg_records(tmp_path)
    _truncate(records.records[1].image_path)
    log = tmp_path / "log.txt"
    handler = logging.FileHandler(log)  # inherited by the loader's worker processes
    logger = logging.getLogger("detect_ft.data.dataset")
    logger.addHandler(handler)
    try:
        dataset = DetectionDataset(records, on_unreadable="drop")
        for epoch in range(3):  # a new loader, so new worker processes, every epoch, as training builds them
            loader = build_loader(dataset, batch_size=2, shuffle=True, workers=1, seed=epoch)
            served = [int(target["image_id"]) for _, targets in loader for target in targets]
            assert len(served) == 4 and 2 not in served
            del loader
    finally:
        logger.removeHandler(handler)
        handler.close()
    (line,) = log.read_text().splitlines()
    assert "j1.jpg: is truncated" in line and "dropped image" in line
    assert [Path(f.file).name for f in dataset.findings()] == ["j1.jpg"]  # counted here, though found in a worker
