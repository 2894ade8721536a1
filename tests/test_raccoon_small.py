"""datasets/raccoon-small: the shipped demo photos load through the VOC adapter, fit the size limit, keep
the licence; the script that makes them scales photos and boxes together (needs ../shared, else skips)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from detect_ft.data.load import load_split

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "datasets" / "raccoon-small"
FULL = REPO.parent / "shared" / "datasets" / "raccoon-voc"


def test_shipped_copy_loads_and_fits_the_limit():
    train, findings = load_split(format="voc", root=SHIPPED, split="train", classes=["raccoon"])
    val, _ = load_split(format="voc", root=SHIPPED, split="val", classes=["raccoon"])
    assert not findings and len(train) == 160 and len(val) == 40
    assert max(max(r.width, r.height) for r in train.records + val.records) == 416
    assert sum(f.stat().st_size for f in SHIPPED.rglob("*") if f.is_file()) <= 5_000_000
    assert "MIT License" in (SHIPPED / "LICENSE").read_text()


@pytest.mark.skipif(not (FULL / "Annotations").is_dir(), reason="../shared/datasets/raccoon-voc is absent")
def test_script_scales_photos_and_boxes_together(tmp_path):
    spec = importlib.util.spec_from_file_location("make_raccoon_small", REPO / "datasets" / "make_raccoon_small.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "small"
    assert tool.main(["--out", str(out), "--long-side", "128", "--quality", "60"]) == 0
    small, _ = load_split(format="voc", root=out, split="val", classes=["raccoon"])
    full, _ = load_split(format="voc", root=FULL, split="val", classes=["raccoon"])
    for a, b in zip(small.records, full.records):
        scale = 128 / max(b.width, b.height)
        assert max(a.width, a.height) == 128
        assert np.allclose(a.boxes, b.boxes * scale, atol=1.5)  # VOC stores integer corners
    other = tmp_path / "not-mine"
    other.mkdir()
    assert tool.main(["--out", str(other)]) == 2  # a folder it did not make is left alone
