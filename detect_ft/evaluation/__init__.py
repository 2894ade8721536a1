"""Evaluation: COCO-style and VOC-style box mAP on records, plots, and the prediction loop.

preds = predict_records(torch_predictor(model, "cuda"), dataset)   # one dict per record
metrics = coco_metrics(dataset, preds)                             # map, map50, per_class, ...
"""

from detect_ft.evaluation.coco_eval import coco_metrics, predictions_to_coco_results, write_coco_results
from detect_ft.evaluation.evaluator import (
    evaluate_model,
    predict_records,
    score_predictions,
    torch_predictor,
)
from detect_ft.evaluation.plots import confusion_matrix, write_plots
from detect_ft.evaluation.voc_eval import voc_metrics

__all__ = [
    "coco_metrics",
    "confusion_matrix",
    "evaluate_model",
    "predict_records",
    "predictions_to_coco_results",
    "score_predictions",
    "torch_predictor",
    "voc_metrics",
    "write_coco_results",
    "write_plots",
]
