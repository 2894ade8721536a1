"""Where pretrained tensors come from: torchvision's COCO or ImageNet weights, or a local file.

torchvision's ``load_state_dict_from_url`` looks in the torch hub cache (``$TORCH_HOME/hub/checkpoints``)
before downloading, so a cached file works offline; when neither works the error names the file, the
cache folder and how to pass a local file instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision.models import detection as tvd
from torchvision.models._api import WeightsEnum

from detect_ft.checkpoint import format as ckpt
from detect_ft.checkpoint.format import check_checkpoint, read_checkpoint, safe_torch_load
from detect_ft.utils.errors import WeightsError

# check_checkpoint and safe_torch_load live in detect_ft.checkpoint.format; the names stay importable from here.
__all__ = [
    "SourceWeights",
    "cache_dir",
    "check_checkpoint",
    "coco_category_names",
    "download_error",
    "fetch_state_dict",
    "read_weights_file",
    "safe_torch_load",
]


@dataclass
class SourceWeights:
    """A full-detector state dict and the class names its head rows stand for.

    Attributes:
        state: state dict of the whole detector (any class count).
        class_names: names for head rows 0..C-1 (row 0 background), or None when unknown.
        origin: where it came from, for messages.
    """

    state: dict[str, torch.Tensor]
    class_names: list[str] | None
    origin: str


def coco_category_names() -> list[str]:
    """torchvision's 91 COCO slots: index 0 is ``__background__``, unused ids are ``N/A``."""
    return list(tvd.FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"])


def cache_dir() -> Path:
    """torch hub's checkpoint folder (``$TORCH_HOME/hub/checkpoints``), where torchvision's files are cached."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def fetch_state_dict(weights: WeightsEnum) -> dict[str, torch.Tensor]:
    """torchvision's weights from the hub cache, downloading them when absent.

    Raises:
        WeightsError: offline (or the download failed) and the file is not cached.
    """
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except OSError as exc:  # URLError, socket and HTTP errors are all OSErrors
        raise download_error(weights, exc) from None


def download_error(weights: WeightsEnum, exc: BaseException) -> WeightsError:
    """The error for weights that are neither cached nor downloadable: names the file, cache and fixes."""
    return WeightsError(
        f"cannot download pretrained weights {os.path.basename(weights.url)} ({exc}); put the file into the "
        f"torch hub cache {cache_dir()} (from {weights.url}), or pass a local file with "
        f"model.weights=/path/to/weights.pth, or use a model whose ImageNet weights install offline "
        f"(model.name=ssdlite320_efficientnet_lite0 model.weights=imagenet), or train from scratch with "
        f"model.weights=none"
    )


def read_weights_file(path: str | os.PathLike, model_name: str) -> SourceWeights:
    """Load a full-detector state dict or a detect-ft checkpoint from ``path`` (safely, see
    :func:`detect_ft.checkpoint.format.read_checkpoint`).

    A detect-ft checkpoint carries its model name and class names, so its head rows can be matched by
    name; a bare 91-class state dict is taken to use torchvision's COCO class order.
    """
    checkpoint = read_checkpoint(path, "model.weights", need="weights")
    saved_name = checkpoint.get(ckpt.MODEL_NAME)
    if saved_name is not None and saved_name != model_name:
        raise WeightsError(
            f"model.weights: {path} holds a {saved_name} checkpoint but model.name is {model_name}; "
            f"set model.name={saved_name} or pick another weights file"
        )
    names = checkpoint.get(ckpt.CLASS_NAMES)
    class_names = ["__background__", *names] if names is not None else None
    state = {k.removeprefix("module."): v for k, v in checkpoint[ckpt.MODEL].items()}  # DDP-saved files prefix keys
    return SourceWeights(state=state, class_names=class_names, origin=str(path))
