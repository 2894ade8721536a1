"""Anchors fitted to the data: box sizes at the model's input, coverage, fitting with known answers, the
models' default anchors, models built with fitted anchors, the config keys, training and check-data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml

from detect_ft.config.schema import load_config
from detect_ft.data.anchor_fit import (
    AnchorSet,
    InputResize,
    best_shape_iou,
    box_sizes,
    coverage,
    fit_anchors,
    kmeans_1d,
    suggest_anchors,
)
from detect_ft.data.records import ImageRecord
from detect_ft.models import build_model, load_detector
from detect_ft.models.anchors import anchor_generator, current_anchors, fit_model_anchors, input_resize
from detect_ft.utils.errors import ConfigError, DetectFTError, WeightsError

RETINANET = AnchorSet(
    "grid",
    ((32, 40, 50), (64, 80, 101), (128, 161, 203), (256, 322, 406), (512, 645, 812)),
    ((0.5, 1.0, 2.0),) * 5,
)
SHARED = AnchorSet("grid", ((32, 64, 128, 256, 512),) * 3, ((0.5, 1.0, 2.0),) * 3)
SSDLITE = AnchorSet("ssd", ((0.2, 0.35, 0.5, 0.65, 0.8, 0.95, 1.0),), ((2, 3),) * 6)
SSD300 = AnchorSet("ssd", ((0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05),), ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,)))


pytestmark = pytest.mark.usefixtures("one_thread")


def _boxes(w: float, h: float, n: int = 50) -> np.ndarray:
    return np.tile([w, h], (n, 1)).astype(np.float64)


def test_coverage_by_hand() -> None:
    boxes = np.array([[10, 10], [10, 40], [100, 100]], np.float64)
    anchors = np.array([[10, 20]], np.float64)
    # (10,10): 100 / (100 + 200 - 100); (10,40): 200 / (400 + 200 - 200); (100,100): 200 / 10000
    assert best_shape_iou(boxes, anchors) == pytest.approx([0.5, 0.5, 0.02])
    assert coverage(boxes, anchors) == pytest.approx(2 / 3)
    assert coverage(boxes, np.array([[10, 20], [100, 90]])) == 1.0
    assert coverage(boxes, anchors, threshold=0.6) == 0.0
    assert math.isnan(coverage(np.zeros((0, 2)), anchors))


def test_kmeans_finds_two_clusters_and_keeps_a_single_value() -> None:
    values = np.concatenate([np.full(30, 1.0), np.full(10, 5.0), np.full(10, 5.5)])
    assert kmeans_1d(values, 2) == pytest.approx([1.0, 5.25])
    assert kmeans_1d(np.full(7, 3.0), 4) == pytest.approx([3.0] * 4)


@pytest.mark.parametrize("current", [RETINANET, SHARED], ids=["per-level", "shared"])
def test_grid_fit_of_one_box_shape_is_that_shape(current) -> None:
    # boxes 2:1 (width:height) of size 64 (sqrt of the area): every size 64, every ratio (h / w) 0.5
    boxes = _boxes(64 * math.sqrt(2), 64 / math.sqrt(2))
    fit = suggest_anchors(boxes, current)
    assert all(size == pytest.approx(64, rel=1e-3) for row in fit.fitted.sizes for size in row)
    assert all(ratio == pytest.approx(0.5, rel=1e-3) for row in fit.fitted.ratios for ratio in row)
    assert fit.fitted.per_location() == current.per_location()
    assert fit.fitted_coverage == 1.0 and fit.boxes == 50


def test_grid_fit_puts_small_sizes_on_fine_levels() -> None:
    boxes = np.concatenate([_boxes(20, 20, 60), _boxes(300, 300, 40)])
    fitted = fit_anchors(boxes, AnchorSet("grid", ((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5))
    sizes = [row[0] for row in fitted.sizes]
    assert sizes == sorted(sizes) and {round(s) for s in sizes} == {20, 300}
    assert coverage(boxes, fitted.shapes()) == 1.0
    # the defaults have nothing near 20 px: the 60 small boxes are uncovered
    assert coverage(boxes, AnchorSet("grid", ((32,), (64,), (128,), (256,), (512,)), ((1.0,),) * 5).shapes()) == 0.4


@pytest.mark.parametrize("current", [SSDLITE, SSD300], ids=["ssdlite", "ssd300"])
def test_ssd_fit_of_one_box_shape_is_that_shape(current) -> None:
    side = 320
    boxes = _boxes(0.03 * side * math.sqrt(2), 0.03 * side / math.sqrt(2))  # scale 0.03, width / height 2
    fit = suggest_anchors(boxes, current, (side, side))
    assert fit.fitted.sizes[0] == pytest.approx([0.03] * 7, rel=1e-3)
    assert all(r == pytest.approx(2.0, rel=1e-3) for row in fit.fitted.ratios for r in row)
    assert fit.fitted.per_location() == current.per_location()
    assert fit.fitted_coverage == 1.0 and fit.current_coverage == 0.0  # the smallest default scale is 0.07


def test_box_sizes_follow_the_model_resize() -> None:
    record = ImageRecord(
        "a.jpg",
        1000,
        500,
        boxes=[[0, 0, 100, 50], [10, 10, 10, 30], [0, 0, 40, 40]],
        labels=[1, 1, 1],
        iscrowd=[False, False, True],
    )
    # short side 500 -> 800 would make the long side 1600 > 1333: the factor is 1333 / 1000
    assert box_sizes([record], InputResize(min_size=800, max_size=1333)) == pytest.approx(np.array([[133.3, 66.65]]))
    assert box_sizes([record], InputResize(fixed=(320, 320))) == pytest.approx(
        np.array([[32, 32]])
    )  # each axis on its own
    assert box_sizes([ImageRecord("b.jpg", 10, 10)], InputResize()).shape == (0, 2)


def _generated_shapes(model: torch.nn.Module, side: int) -> np.ndarray:
    """The distinct (width, height) of the anchors the model's own generator makes on a side x side input."""
    from torchvision.models.detection.image_list import ImageList

    model.eval()
    images = ImageList(torch.zeros(1, 3, side, side), [(side, side)])
    with torch.no_grad():
        features = list(model.backbone(images.tensors).values())
        boxes = anchor_generator(model)(images, features)[0]
    return (boxes[:, 2:] - boxes[:, :2]).double().numpy()


@pytest.mark.parametrize(
    "name, expected",
    [
        ("ssdlite320_mobilenet_v3_large", SSDLITE),
        ("ssd300_vgg16", SSD300),
        ("retinanet_efficientnet_lite0_fpn", RETINANET),
        ("fasterrcnn_mobilenet_v3_large_320_fpn", SHARED),
    ],
)
def test_default_anchors_are_read_from_each_family_and_their_shapes_match_torchvision(name, expected) -> None:
    model = build_model(name, 2, weights="none")
    assert current_anchors(model) == expected
    resize = input_resize(model)
    side = resize.fixed[0] if resize.fixed else 320
    ours, theirs = expected.shapes((side, side)), _generated_shapes(model, side)
    distance = np.abs(ours[:, None, :] - theirs[None, :, :]).max(axis=2)  # (ours, theirs), pixels
    assert distance.min(axis=0).max() < 0.01 and distance.min(axis=1).max() < 0.01


@pytest.mark.parametrize(
    "name",
    ["ssdlite320_mobilenet_v3_large", "fasterrcnn_mobilenet_v3_large_320_fpn", "retinanet_efficientnet_lite0_fpn"],
)
def test_fitted_anchors_keep_every_pretrained_tensor_and_run(tmp_path, name) -> None:
    torch.manual_seed(0)
    source = build_model(name, 2, weights="none", min_size=160, max_size=160)
    torch.save(source.state_dict(), tmp_path / "w.pth")
    resize = input_resize(source)
    boxes = _boxes(30, 15) if resize.fixed is None else _boxes(30, 15) * resize.fixed[0] / 160
    fitted = suggest_anchors(boxes, current_anchors(source), resize.fixed or (1, 1)).fitted
    sizes, ratios = fitted.config_values()
    options = dict(weights=str(tmp_path / "w.pth"), class_names=["a", "b"], min_size=160, max_size=160)
    default = build_model(name, 2, **options)
    model = build_model(name, 2, anchor_sizes=sizes, anchor_ratios=ratios, **options)
    assert current_anchors(model) == fitted and current_anchors(default) != fitted
    assert default.state_dict().keys() == model.state_dict().keys()
    for key, tensor in default.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[key]), key
    model.eval()
    with torch.no_grad():
        out = model([torch.rand(3, 120, 160)])
    assert out[0]["boxes"].shape[1] == 4
    model.train()
    target = {"boxes": torch.tensor([[10.0, 10.0, 70.0, 40.0]]), "labels": torch.tensor([1])}
    losses = model([torch.rand(3, 120, 160), torch.rand(3, 120, 160)], [target, target])  # BatchNorm needs 2
    assert all(torch.isfinite(v) for v in losses.values())


def test_anchor_config_checks() -> None:
    with pytest.raises(ConfigError, match="anchor-free"):
        load_config(None, ["model.name=fcos_resnet50_fpn", "model.anchors=auto"])
    with pytest.raises(ConfigError, match="anchor-free"):
        load_config(None, ["model.name=fcos_efficientnet_lite0_fpn", "model.anchor_sizes=[[8],[16],[32],[64],[128]]"])
    with pytest.raises(ConfigError, match="model.anchor_ratios"):
        load_config(None, ["model.anchor_ratios=[[1, -2]]"])
    with pytest.raises(ConfigError, match="model.anchors"):
        load_config(None, ["model.anchors=kmeans"])
    cfg = load_config(None, ["model.anchors=auto", "model.anchor_sizes=[[0.1,0.2,0.3,0.4,0.5,0.6,0.7]]"])
    assert cfg.model.anchor_sizes == [[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]] and cfg.model.anchor_ratios == []
    # the layout is the model's: SSDLite takes one row of 7 scales; RetinaNet 5 levels of 3 sizes
    with pytest.raises(ConfigError, match="one list of 7 scales"):
        build_model("ssdlite320_mobilenet_v3_large", 2, weights="none", anchor_sizes=[[0.1, 0.2]])
    with pytest.raises(ConfigError, match="model.anchor_sizes"):  # as read from a hostile checkpoint
        build_model("ssdlite320_mobilenet_v3_large", 2, weights="none", anchor_sizes=[[10**400] * 7])
    with pytest.raises(ConfigError, match=r"5 lists .* \[3, 3, 3, 3, 3\] sizes"):
        build_model("retinanet_efficientnet_lite0_fpn", 2, weights="none", anchor_sizes=[[32, 64]] * 5)


def test_training_with_auto_anchors_records_them_for_every_rebuild(tmp_path, caplog) -> None:
    from helpers import make_tiny_data, tiny_config

    from detect_ft.data.split import SplitSpec, load_checked_split
    from detect_ft.engine import trainer

    data_dir = make_tiny_data(tmp_path / "data")
    overrides = ("model.anchors=auto", "train.max_iters_per_epoch=1", "train.eval_interval=0")
    cfg = tiny_config(data_dir, tmp_path / "run", *overrides)
    caplog.set_level("INFO", logger="detect_ft")  # the trainer logs its lines
    run_dir = trainer.train(cfg, progress=False)
    assert "anchors fitted to" in caplog.text
    assert cfg.model.anchor_sizes == []  # the caller's config is left as it was

    saved = load_config(run_dir / "config.yaml").model
    records, _ = load_checked_split(SplitSpec.from_config(cfg.data), "train.json", [])
    expected = fit_model_anchors(build_model(cfg.model.name, 2, weights="none", min_size=128), records.records)
    assert (saved.anchor_sizes, saved.anchor_ratios) == expected.fitted.config_values()
    assert saved.anchor_sizes != expected.current.config_values()[0]
    model, meta = load_detector(run_dir / "checkpoints" / "last.pt")
    assert current_anchors(model) == expected.fitted
    assert meta["config"]["model"]["anchor_sizes"] == saved.anchor_sizes

    checkpoint = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    checkpoint["config"]["model"]["anchor_sizes"] = [[0.5, 0.6]]
    torch.save(checkpoint, tmp_path / "bad.pt")
    with pytest.raises(WeightsError, match="anchors in its config do not fit"):
        load_detector(tmp_path / "bad.pt")

    # Resuming needs the anchors the heads learnt: auto fits the same ones again; the defaults are refused.
    resumed = ("train.resume=auto", "train.epochs=2")
    with pytest.raises(DetectFTError, match=r"trained with model.anchor_sizes=\[\[.*the defaults"):
        trainer.train(tiny_config(data_dir, run_dir, *overrides[1:], *resumed), progress=False)
    assert trainer.train(tiny_config(data_dir, run_dir, *overrides, *resumed), progress=False) == run_dir
    assert load_detector(run_dir / "checkpoints" / "last.pt")[1]["epoch"] == 2


def test_check_data_prints_default_and_fitted_anchors(tmp_path, capsys) -> None:
    from helpers import make_tiny_data

    from detect_ft.cli.main import main

    data_dir = make_tiny_data(tmp_path / "data")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"data": {"format": "coco", "root": str(data_dir), "train": "train.json"}}))
    assert main(["check-data", str(config), "--split", "train", "--fast"]) == 0
    out = capsys.readouterr().out
    assert "== anchors of ssdlite320_efficientnet_lite0" in out and "320x320" in out
    assert "default: sizes [[0.2, 0.35" in out and "fitted: sizes" in out and "model.anchor_sizes=[[" in out
    assert main(["check-data", str(config), "--split", "train", "--fast", "model.name=fcos_resnet50_fpn"]) == 0
    assert "== anchors" not in capsys.readouterr().out
