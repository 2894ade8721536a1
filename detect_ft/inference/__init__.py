"""Torch-free inference: numpy, OpenCV and onnxruntime only.

    from detect_ft.inference import EdgeDetector, read_image
    detector = EdgeDetector("model.onnx", conf=0.3)
    result = detector.predict(read_image("photo.jpg"))  # boxes xyxy pixels, scores, labels 1..K, names

The package holds everything between a detector and the user's files that needs no torch: what
``predict`` reads (:mod:`.sources`, decoded by :mod:`detect_ft.data.image`, the one image reader), the detections format
(:mod:`.predictions`), ``Result`` (:mod:`.results`), sliced inference (:mod:`.slicing`), the onnxruntime
detector (:mod:`.runtime`) and the writers of annotated images, videos and datasets (:mod:`.writer`,
:mod:`.outputs`). Importing it never imports torch (tests/test_edge.py checks it with torch made
unimportable).
"""

from detect_ft.inference.runtime import METADATA_KEY, EdgeDetector, preprocess, read_image, read_metadata

__all__ = ["METADATA_KEY", "EdgeDetector", "preprocess", "read_image", "read_metadata"]
