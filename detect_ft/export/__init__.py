"""ONNX export of detect-ft detectors, the PyTorch/onnxruntime parity check and INT8 quantisation.

Uses torch; the torch-free side (running the exported files) is :mod:`detect_ft.inference`.
"""

from detect_ft.export.onnx_export import build_metadata, export_onnx, set_metadata
from detect_ft.export.parity import compare_detections, pair_detections
from detect_ft.export.pipeline import export_detector, verify_export
from detect_ft.export.quantize import int8_path_for, quantize_int8

__all__ = [
    "build_metadata",
    "compare_detections",
    "export_detector",
    "export_onnx",
    "int8_path_for",
    "pair_detections",
    "quantize_int8",
    "set_metadata",
    "verify_export",
]
