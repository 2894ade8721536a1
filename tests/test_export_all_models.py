"""Every other registry model exports, runs in onnxruntime and passes the parity check (slow: ResNet-50
and VGG backbones on CPU)."""

from __future__ import annotations

import pytest
from helpers import CLASSES, FAST_MODELS, pseudo_labelled_split, separated_model, synthetic_root

from detect_ft.export import export_detector
from detect_ft.inference import EdgeDetector
from detect_ft.models import list_models


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in list_models() if n not in FAST_MODELS])
def test_registry_model_exports_with_parity(tmp_path, name):
    # FCOS keeps sqrt(class score x centerness) above 0.2; a random-init FCOS stays below that on most
    # synthetic images (on every one with the small timm backbone), so its threshold is lowered to have
    # boxes to compare.
    options = {"score_thresh": 0.05} if name.startswith("fcos_") else {}
    # BatchNorm statistics from 2 images: each calibration image is a full forward pass (seconds for the
    # ResNet-50 two-stage models), and 2 give the spread-out scores that parity needs as well as 8.
    model = separated_model(name, calibration_images=2, **options)
    val = pseudo_labelled_split(model, synthetic_root(tmp_path, num_train=0, num_val=2))
    report = export_detector(model, tmp_path / "model.onnx", model_name=name, class_names=CLASSES, val_dataset=val)
    parity = report["parity"]
    assert abs(parity["map_diff_points"]) <= 0.5 and parity["images"] == 2
    # The export's own check ran PyTorch (torch_predictor) and the written file (EdgeDetector) on every
    # validation image and paired their detections: the same comparison, not recomputed here.
    stats = parity["detections"]
    assert stats["reference_detections"] > 0 and stats["match_rate"] >= 0.98, stats
    assert stats["max_score_diff"] < 1e-3
    assert EdgeDetector(tmp_path / "model.onnx").class_names == CLASSES
