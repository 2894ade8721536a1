"""predict_records / torch_predictor / evaluate_model on tiny images written by the test."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from helpers import noise_image, write_coco

from detect_ft.data.records import DatasetRecords, ImageRecord
from detect_ft.evaluation.evaluator import evaluate_model, predict_records, torch_predictor
from detect_ft.utils.errors import DataError, DetectFTError

SIZES = [(64, 48), (80, 64), (96, 96), (72, 40), (64, 64)]  # (width, height)


def _box(width, height):
    return [width * 0.25, height * 0.25, width * 0.75, height * 0.75]


@pytest.fixture()
def dataset(tmp_path):
    records = []
    for i, (w, h) in enumerate(SIZES):
        bgr = np.zeros((h, w, 3), np.uint8)
        bgr[..., 0] = 200  # blue in OpenCV's BGR order
        bgr[..., 2] = i * 10
        path = tmp_path / f"img{i}.png"
        cv2.imwrite(str(path), bgr)
        records.append(ImageRecord(str(path), w, h, [_box(w, h)], [1 + i % 2], image_id=i + 1))
    return DatasetRecords(records, ["a", "b"], source=str(tmp_path))


def _fake(calls):
    def predict_batch(images):
        calls.append(len(images))
        out = []
        for img in images:
            h, w = img.shape[:2]
            assert img.dtype == np.uint8 and img[0, 0, 2] == 200  # RGB: blue is the last channel
            out.append({"boxes": [_box(w, h)], "scores": [0.9], "labels": [1 + img[0, 0, 0] // 10 % 2]})
        return out

    return predict_batch


@pytest.mark.parametrize("workers", [0, 2])
def test_predict_records_keeps_order_and_batches(dataset, workers):
    calls = []
    preds = predict_records(_fake(calls), dataset, batch_size=2, workers=workers, progress=False)
    assert calls == [2, 2, 1]
    for record, pred in zip(dataset.records, preds):
        assert pred["boxes"].dtype == np.float32 and pred["labels"].dtype == np.int64
        np.testing.assert_allclose(pred["boxes"], record.boxes)
        assert pred["labels"].tolist() == record.labels.tolist()


def test_size_mismatch_and_bad_predictor_are_reported(dataset):
    dataset.records[2].width = 100
    with pytest.raises(DataError, match=r"img2.png decodes to 96x96 but is annotated as 100x96"):
        predict_records(_fake([]), dataset, progress=False)
    dataset.records[2].width = 96
    with pytest.raises(DetectFTError, match="one dict per image"):
        predict_records(lambda images: [], dataset, progress=False)


class BoxModel(torch.nn.Module):
    """Predicts the middle half of each image as class 1 if red < 25, else class 2; checks its inputs."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, images):
        assert not self.training and torch.is_inference_mode_enabled()
        out = []
        for img in images:
            assert img.dtype == torch.float32 and img.shape[0] == 3 and float(img.max()) <= 1.0
            h, w = img.shape[1:]
            label = 1 + int(round(float(img[0, 0, 0]) * 255 / 10)) % 2
            out.append(
                {
                    "boxes": torch.tensor([_box(w, h)]) * self.scale,
                    "scores": torch.tensor([0.8]),
                    "labels": torch.tensor([label]),
                }
            )
        return out


def test_torch_predictor_outputs_numpy(dataset):
    preds = predict_records(torch_predictor(BoxModel(), "cpu"), dataset, batch_size=3, progress=False)
    assert isinstance(preds[0]["boxes"], np.ndarray)
    np.testing.assert_allclose(preds[1]["boxes"], dataset.records[1].boxes, rtol=1e-6)


def test_torch_predictor_runs_one_image_per_forward_on_the_cpu(dataset):
    model, sizes = BoxModel(), []
    model.register_forward_pre_hook(lambda _, args: sizes.append(len(args[0])) and None)
    images = [np.zeros((48, 64, 3), np.uint8)] * 3
    assert len(torch_predictor(model, "cpu")(images)) == 3 and sizes == [1, 1, 1]
    sizes.clear()  # BatchNorm recalibration needs the batch in one forward
    assert len(torch_predictor(model, "cpu", whole_batches=True)(images)) == 3 and sizes == [3]


def test_evaluate_model_scores_and_restores_train_mode(dataset):
    model = BoxModel().train()
    metrics = evaluate_model(model, dataset, device="cpu", batch_size=2, workers=1)
    assert model.training
    assert metrics["map"] == pytest.approx(1.0) and metrics["voc_map50"] == pytest.approx(1.0)
    assert metrics["per_class"] == {"a": pytest.approx(1.0), "b": pytest.approx(1.0)}
    assert metrics["images_per_s"] > 0
    assert evaluate_model(model, dataset, score_thresh=0.9)["num_detections"] == 0


@pytest.mark.slow
def test_torchvision_detector_runs_through_the_loop(dataset):
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

    torch.manual_seed(0)
    model = fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, num_classes=3, min_size=64, max_size=96, box_score_thresh=0.0
    )
    preds = predict_records(torch_predictor(model, "cpu"), dataset, batch_size=2, progress=False)
    assert len(preds) == len(dataset)
    for record, pred in zip(dataset.records, preds):
        assert pred["boxes"].shape[1] == 4 and len(pred["scores"]) == len(pred["labels"])
        if len(pred["boxes"]):  # boxes come back in the original image's pixels
            assert pred["boxes"][:, 2].max() <= record.width + 1e-3
            assert set(pred["labels"].tolist()) <= {1, 2}


def test_a_truncated_image_found_while_evaluating_is_named_or_left_out(tmp_path):
    from detect_ft.data.checks.doctor import prepare_split

    for i in range(3):
        noise_image(tmp_path / f"v{i}.jpg", seed=i)
    write_coco(
        tmp_path, [(f"v{i}.jpg", 64, 48) for i in range(3)], {f"v{i}.jpg": [[5, 5, 20, 20, "cat"]] for i in range(3)}
    )
    common = dict(format="coco", root=tmp_path, split="train.json", images="", classes=None, keep_background=True)
    split, _ = prepare_split(**common, policies={})  # header check only: the cut is not visible yet
    data = (tmp_path / "v1.jpg").read_bytes()
    (tmp_path / "v1.jpg").write_bytes(data[: len(data) // 2])
    nothing = lambda images: [
        {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0, int)} for _ in images
    ]  # noqa: E731
    with pytest.raises(DataError, match="v1.jpg is truncated.*while predicting"):
        predict_records(nothing, split, progress=False)
    # evaluation splits are decoded up front, so the policy can leave the image (and its boxes) out
    with pytest.raises(DataError, match="unreadable_image.*v1.jpg"):
        prepare_split(**common, policies={}, decode=True)
    kept, _ = prepare_split(**common, policies={"on_unreadable_image": "drop"}, decode=True)
    assert [r.file_name for r in kept.records] == ["v0.jpg", "v2.jpg"] and kept.num_boxes == 2
