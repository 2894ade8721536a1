"""Torch-free inference for exported detectors: numpy, OpenCV and onnxruntime only.

    from detect_ft.edge import EdgeDetector, read_image
    detector = EdgeDetector("model.onnx", conf=0.3)
    result = detector.predict(read_image("photo.jpg"))  # boxes xyxy pixels, scores, labels 1..K, names

Importing this package never imports torch (tests/test_edge.py checks it with torch made unimportable).
"""

from detect_ft.edge.runtime import METADATA_KEY, EdgeDetector, preprocess, read_image, read_metadata

__all__ = ["METADATA_KEY", "EdgeDetector", "preprocess", "read_image", "read_metadata"]
