"""detect-ft: fine-tune pretrained torchvision detectors on your own classes."""

from detect_ft._version import __version__
from detect_ft.engine import openmp as _openmp  # noqa: F401  (first: sets the OpenMP wait policy before torch loads)

__all__ = ["Detector", "Result", "TrainRun", "build_model", "list_models", "__version__"]


def __getattr__(name: str):
    # Lazy, so that `import detect_ft` (and the torch-free edge runtime under it) imports no torch.
    if name in ("Detector", "TrainRun"):
        from detect_ft import api

        return getattr(api, name)
    if name == "Result":
        from detect_ft.inference.results import Result

        return Result
    raise AttributeError(f"module 'detect_ft' has no attribute {name!r}")


def list_models() -> list[str]:
    from detect_ft.models import list_models as _list_models

    return _list_models()


def build_model(name: str, num_classes: int, weights: str | None = None, class_names=None, **options):
    """See :func:`detect_ft.models.build_model`."""
    from detect_ft.models import build_model as _build_model

    return _build_model(name, num_classes, weights=weights, class_names=class_names, **options)
