"""DDP plumbing for ``torchrun``: process group set-up, rank helpers and cross-rank reductions.

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address; without them
everything here degrades to a single process (rank 0 of 1) and the reductions are no-ops.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from detect_ft.utils.errors import DetectFTError

# Rank 0 validates alone while the other ranks wait at a barrier; a long validation must not trip the
# collective timeout (10 minutes by default for NCCL).
PROCESS_GROUP_TIMEOUT = datetime.timedelta(hours=2)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size`` processes, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DistributedDataParallel / DataParallel wrapper (or ``model`` itself)."""
    wrappers = (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)
    return model.module if isinstance(model, wrappers) else model


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device: str) -> tuple[DistInfo, torch.device]:
    """Join the process group when launched by torchrun, and pick this process's device.

    Args:
        device: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` (train.device). Under torchrun with CUDA, each
            process takes ``cuda:LOCAL_RANK`` and the NCCL backend; on CPU the gloo backend.

    Returns:
        ``(info, device)``.
    """
    want_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if want_cuda and not torch.cuda.is_available():
        raise DetectFTError(f"train.device={device} but no CUDA device is visible; set train.device=auto or cpu")
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) <= 1:
        if want_cuda:
            return DistInfo(), torch.device(device if device.startswith("cuda:") else "cuda")
        return DistInfo(), torch.device("cpu")
    info = DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    if want_cuda:
        if info.local_rank >= torch.cuda.device_count():
            raise DetectFTError(
                f"LOCAL_RANK {info.local_rank} but only {torch.cuda.device_count()} CUDA devices on this node; "
                "pass torchrun --nproc_per_node at most the number of GPUs"
            )
        torch.cuda.set_device(info.local_rank)
        target = torch.device("cuda", info.local_rank)
        backend = "nccl"
    else:
        target = torch.device("cpu")
        backend = "gloo"
    if not dist.is_initialized():
        try:
            # device_id (torch >= 2.3) binds NCCL to this GPU now, so barriers never guess the device.
            kwargs: dict[str, Any] = {"device_id": target} if backend == "nccl" else {}
            dist.init_process_group(backend, timeout=PROCESS_GROUP_TIMEOUT, **kwargs)
        except TypeError:
            dist.init_process_group(backend, timeout=PROCESS_GROUP_TIMEOUT)
    return info, target


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of a list of floats over all ranks (the list itself when not distributed)."""
    if not is_distributed():
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def all_true(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on every rank, so all ranks take the same branch."""
    if not is_distributed():
        return flag
    tensor = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return bool(tensor.item())


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm statistics). DDP broadcasts them before each forward,
    so after the last forward of an epoch each rank holds statistics of its own shard until this call."""
    if not is_distributed():
        return
    for buffer in module.buffers():
        dist.broadcast(buffer, src=0)


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not is_distributed():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` on every rank, in rank order (``[obj]`` when not distributed)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
