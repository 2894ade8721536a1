"""Confusion matrix by hand, and the PNG files of write_plots."""

from __future__ import annotations

from helpers import detections

from detect_ft.data.records import DatasetRecords, ImageRecord
from detect_ft.evaluation.plots import confusion_matrix, write_plots


def _case():
    records = [
        ImageRecord(
            "/x/1.jpg", 128, 128, [[0, 0, 20, 20], [40, 40, 60, 60], [80, 80, 100, 100]], [1, 2, 2], image_id=1
        ),
        ImageRecord(
            "/x/2.jpg", 128, 128, [[0, 0, 50, 50], [60, 60, 120, 120]], [1, 1], iscrowd=[False, True], image_id=2
        ),
    ]
    preds = [
        # right class on box 1, "a" on the "b" box 2, box 3 missed, a false alarm "b", a low-score "a"
        detections(
            [[1, 1, 20, 20], [40, 40, 61, 61], [100, 0, 120, 20], [80, 80, 100, 100]],
            [0.9, 0.8, 0.7, 0.1],
            [1, 1, 2, 1],
        ),
        # right class, plus a detection on the crowd region (not counted)
        detections([[0, 0, 50, 49], [62, 62, 118, 118]], [0.9, 0.9], [1, 2]),
    ]
    return DatasetRecords(records, ["a", "b"]), preds


def test_confusion_matrix_counts_by_hand():
    dataset, preds = _case()
    m = confusion_matrix(dataset, preds, iou=0.5, score_thresh=0.25)
    # rows: gt a, gt b, background; columns: predicted a, predicted b, background
    assert m.tolist() == [[2, 0, 0], [1, 0, 1], [0, 1, 0]]


def test_lower_score_threshold_pairs_the_missed_box():
    dataset, preds = _case()
    m = confusion_matrix(dataset, preds, iou=0.5, score_thresh=0.05)
    assert m.tolist() == [[2, 0, 0], [2, 0, 0], [0, 1, 0]]


def test_write_plots_writes_two_pngs(tmp_path):
    dataset, preds = _case()
    paths = write_plots(dataset, preds, tmp_path / "plots")
    assert sorted(p.name for p in paths) == ["confusion_matrix.png", "pr_curves.png"]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    assert not list((tmp_path / "plots").glob(".*.tmp"))
