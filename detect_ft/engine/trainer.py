"""``train(cfg) -> run_dir``: the fine-tuning run, from data checks to the end-of-run summary.

    cfg = load_config("configs/demo.yaml", ["train.epochs=5"])
    run_dir = train(cfg)      # <output.dir>/: config.yaml, metrics.jsonl, checkpoints/, plots/, tensorboard/

Under ``torchrun`` every process runs this function: DDP with a DistributedSampler, losses and img/s
reduced over ranks, and rank 0 alone validating (on the whole validation split, with the unwrapped or
EMA model) and writing files while the others wait. This is the only engine module that reads Config.
"""

from __future__ import annotations

import copy
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from detect_ft.config import Config, config_to_dict, save_config
from detect_ft.engine import distributed as dist_utils
from detect_ft.engine.checkpoint import (
    load_checkpoint,
    resolve_resume,
    restore_training_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)  # fmt: skip
from detect_ft.engine.ema import ModelEMA, unwrap
from detect_ft.engine.logs import MetricsLog, format_summary, log_tensorboard, open_tensorboard, write_plots
from detect_ft.engine.loop import train_one_epoch
from detect_ft.engine.optim import (
    build_optimizer,
    build_scheduler,
    optimizer_steps_per_epoch,
    resolve_warmup_iters,
)  # fmt: skip
from detect_ft.engine.rundir import choose_run_dir
from detect_ft.errors import DetectFTError
from detect_ft.io import atomic_path
from detect_ft.models import MODELS

__all__ = ["train", "train_one_epoch", "seed_everything"]

NO_BOXES = "no boxes to score: the validation split has no countable ground-truth boxes"


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train(cfg: Config, progress: bool = True) -> Path:
    """Fine-tune ``cfg.model.name`` on ``cfg.data`` as ``cfg.train`` says; return the run directory.

    Raises:
        DataError: the data checks found problems at policy ``error`` (nothing is trained).
        DetectFTError: a bad resume checkpoint, or ``train.max_nonfinite`` non-finite losses in a row.
    """
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    group_before = torch.distributed.is_available() and torch.distributed.is_initialized()
    info, device = dist_utils.init_distributed(cfg.train.device)
    try:
        return _train(cfg, info, device, progress)
    finally:
        torch.use_deterministic_algorithms(deterministic_before)
        if not group_before:  # a process group the caller set up is the caller's to end
            dist_utils.cleanup_distributed()


def _train(cfg: Config, info: dist_utils.DistInfo, device: torch.device, progress: bool) -> Path:
    t = cfg.train
    main = info.is_main
    say = print if main else (lambda *a, **k: None)
    _set_determinism(t.deterministic, device)
    if info.distributed and t.sync_bn and device.type != "cuda":
        raise DetectFTError("train.sync_bn=true needs CUDA devices (PyTorch's SyncBatchNorm runs on GPUs only); "
                            "set train.sync_bn=false to train with DDP on CPUs")  # fmt: skip

    train_records, val_records = _load_data(cfg, say)
    class_names, category_ids = list(train_records.class_names), list(train_records.category_ids)
    # Rank 0 picks (and creates) the directory, so that an earlier run is never written over.
    chosen = choose_run_dir(cfg.output.dir, resume=t.resume, overwrite=cfg.output.overwrite) if main else None
    run_dir, note = dist_utils.broadcast_object(chosen)
    if note:
        say(note)
    cfg = copy.deepcopy(cfg)  # what config.yaml and the checkpoints record: the directory actually used,
    cfg.output.dir, cfg.output.overwrite = str(run_dir), False  # and no overwrite for a rerun of that config

    seed_everything(t.seed)  # the same initial weights on every rank
    model = _build_model(cfg, len(class_names), class_names)
    trainable = {name: p.requires_grad for name, p in model.named_parameters()}
    if info.distributed and t.sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if t.channels_last:  # faster on GPUs, and for depthwise convs (EfficientNet, MobileNet) on CPUs too
        model.to(memory_format=torch.channels_last)
    seed_everything(t.seed + info.rank)  # per-rank randomness (e.g. Faster R-CNN's box sampling)

    from detect_ft.data.dataset import DetectionDataset
    from detect_ft.data.transforms import build_transform

    a = cfg.augment
    dataset = DetectionDataset(train_records, build_transform(a.preset, train=True, min_area=a.min_area,
                                                              min_visibility=a.min_visibility),
                               on_unreadable=cfg.data.on_unreadable_image)  # fmt: skip
    iters = len(_epoch_loader(cfg, dataset, info, 0))
    iters = min(iters, t.max_iters_per_epoch) if t.max_iters_per_epoch else iters
    steps_per_epoch = optimizer_steps_per_epoch(iters, t.accumulate)
    optimizer = build_optimizer(model, cfg.model.name, optimizer=t.optimizer, lr=t.lr, momentum=t.momentum,
                                nesterov=t.nesterov, weight_decay=t.weight_decay,
                                backbone_lr_mult=t.backbone_lr_mult)  # fmt: skip
    warmup_iters, warmup_note = resolve_warmup_iters(t.warmup_iters, t.epochs * steps_per_epoch)
    if warmup_note:
        say(warmup_note)
    scheduler = build_scheduler(optimizer, scheduler=t.scheduler, total_steps=t.epochs * steps_per_epoch,
                                steps_per_epoch=steps_per_epoch, warmup_iters=warmup_iters,
                                milestones=t.milestones, gamma=t.gamma)  # fmt: skip
    amp_dtype = _amp_dtype(t.amp, device)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    ema = ModelEMA(model, t.ema_decay) if t.ema else None

    state: dict[str, Any] = {"best_value": None, "best_epoch": None, "stale": 0, "nonfinite_run": 0}
    start_epoch, iteration = 0, 0
    metrics: dict[str, Any] = {}  # the last validation's, carried into every checkpoint
    resume_path = resolve_resume(t.resume, run_dir) if main else None
    checkpoint = dist_utils.broadcast_object(load_checkpoint(resume_path) if resume_path else None)
    if checkpoint is not None:
        _check_resumable(checkpoint, cfg, class_names, resume_path)
        try:
            restore_training_state(checkpoint, model=model, optimizer=optimizer, scheduler=scheduler,
                                   scaler=scaler, ema=ema)  # fmt: skip
            start_epoch, iteration = int(checkpoint["epoch"]), int(checkpoint["iteration"])
            state.update(checkpoint.get("trainer", {}))
            metrics = dict(checkpoint.get("metrics") or {})
            saved_rng = checkpoint.get("rng") or []
            if len(saved_rng) == info.world_size:
                set_rng_state(saved_rng[info.rank])
        except (KeyError, ValueError, TypeError, RuntimeError, IndexError, AttributeError) as exc:
            reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise DetectFTError(f"train.resume: {resume_path} does not fit this run ({reason}); resume with the "
                                "config it was trained with, or start a new run") from None  # fmt: skip
        say(f"resumed from {resume_path} after epoch {start_epoch} (step {iteration})")
        del checkpoint

    ckpt_dir, plots_dir = run_dir / "checkpoints", run_dir / "plots"
    log = MetricsLog(run_dir / "metrics.jsonl", keep_epochs=start_epoch) if main else None
    writer = open_tensorboard(run_dir / "tensorboard") if main else None
    if main:
        save_config(cfg, run_dir / "config.yaml")
        for stale in ckpt_dir.glob(".*.tmp"):  # left by a process killed mid-write; never a checkpoint
            stale.unlink(missing_ok=True)
    say(_banner(cfg, info, device, amp_dtype, len(dataset), val_records, iters))

    started = time.perf_counter()
    stopped: Optional[str] = None
    wrapped, frozen_now = None, None
    try:
        for epoch in range(start_epoch, t.epochs):
            frozen = epoch < t.freeze_backbone_epochs
            if frozen != frozen_now:
                _set_backbone_frozen(model, cfg.model.name, frozen, trainable)
                # DDP records which parameters need gradients when it is built, so rebuild it on a change.
                wrapped, frozen_now = _wrap(model, info, device), frozen
            loader = _epoch_loader(cfg, dataset, info, epoch)
            stats = train_one_epoch(
                wrapped,
                optimizer,
                loader,
                device,
                epoch=epoch,
                scheduler=scheduler,
                scaler=scaler,
                amp_dtype=amp_dtype,
                accumulate=t.accumulate,
                clip_grad_norm=t.clip_grad_norm,
                ema=ema,
                max_iters=t.max_iters_per_epoch,
                max_nonfinite=t.max_nonfinite,
                nonfinite_run=state["nonfinite_run"],
                progress=progress and main,
            )
            del loader  # shuts its workers down before validation starts its own threads
            dist_utils.broadcast_buffers(model)
            # every rank checks (DDP keeps their weights equal), so every rank stops alike
            _check_finite_weights(model, ema, epoch, t.epochs, log, _row(epoch, stats))
            iteration += stats["steps"]
            state["nonfinite_run"] = stats["nonfinite_run"]
            row = _row(epoch, stats)
            improved = False
            if _validate_now(cfg, val_records, epoch) and main:
                metrics = _validate(cfg, ema.module if ema else unwrap(model), val_records, device)
                row.update({k: metrics[k] for k in ("map", "map50", "map75")}, val_time=metrics["seconds"])
                value = metrics[t.best_metric]
                if value is None:  # a split without countable boxes defines no AP: nothing to pick best.pt by
                    row["note"] = NO_BOXES
                else:
                    improved = state["best_value"] is None or value > state["best_value"]
                    if improved:
                        state.update(best_value=value, best_epoch=epoch + 1, stale=0)
                    else:
                        state["stale"] += 1
            rng = dist_utils.gather_objects(rng_state())
            if main:
                # Order matters for a kill between writes: the metrics row first (a resume drops rows past
                # last.pt's epoch), best.pt before last.pt (a resume redoes the epoch and rewrites both).
                log.append(row)
                target = ckpt_dir / ("best.pt" if improved else "last.pt")
                save_checkpoint(target, model=model, model_name=cfg.model.name, class_names=class_names,
                                category_ids=category_ids, config=config_to_dict(cfg), epoch=epoch + 1,
                                iteration=iteration, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                                ema=ema, rng=rng, metrics=metrics, trainer=dict(state))  # fmt: skip
                if improved:
                    _copy_atomic(target, ckpt_dir / "last.pt")
                log_tensorboard(writer, row)
                write_plots(log.rows, plots_dir)
                say(_epoch_line(row, t.epochs, state, t.best_metric))
                if t.patience and state["stale"] >= t.patience:
                    stopped = (f"{t.best_metric} did not improve for {state['stale']} validations "
                               f"(train.patience={t.patience})")  # fmt: skip
            stopped = dist_utils.broadcast_object(stopped)
            if stopped:
                break
    finally:
        if writer is not None:
            writer.close()
    if main:
        files = [run_dir / "config.yaml", run_dir / "metrics.jsonl", ckpt_dir / "last.pt", ckpt_dir / "best.pt",
                 plots_dir / "loss.png", plots_dir / "map.png", run_dir / "tensorboard"]  # fmt: skip
        say(format_summary(run_dir=run_dir, model_name=cfg.model.name, rows=log.rows,
                           best={"value": state["best_value"], "epoch": state["best_epoch"]},
                           best_metric=t.best_metric, stopped=stopped, seconds=time.perf_counter() - started,
                           files=files, constant_predictions=bool(metrics.get("constant_predictions"))))  # fmt: skip
    dist_utils.barrier()
    return run_dir


def _row(epoch: int, stats: dict[str, Any]) -> dict[str, Any]:
    """The epoch's metrics.jsonl row before validation."""
    keys = ("iterations", "loss", "losses", "lr", "img_s", "time", "skipped_steps")
    return {"epoch": epoch + 1, **{k: stats[k] for k in keys}}


def _check_finite_weights(model: torch.nn.Module, ema: Optional[ModelEMA], epoch: int, epochs: int,
                          log: Optional[MetricsLog], row: dict[str, Any]) -> None:  # fmt: skip
    """Stop the run before non-finite (nan/inf) weights are validated or saved.

    The epoch's row is still logged (strict JSON: non-finite values become null); best.pt and last.pt
    keep the last epoch whose weights were finite.
    """
    modules = [("model", unwrap(model))] + ([("EMA", ema.module)] if ema is not None else [])
    for what, module in modules:
        bad = [name for name, value in module.state_dict().items()
               if value.is_floating_point() and not bool(torch.isfinite(value).all())]  # fmt: skip
        if bad:
            if log is not None:
                log.append(row)
            raise DetectFTError(
                f"training stopped: the {what} weights became non-finite (nan/inf) in epoch {epoch + 1}/{epochs} "
                f"({len(bad)} tensors, e.g. {bad[0]}); checkpoints/best.pt and last.pt keep the last finite "
                "epoch; lower train.lr, add warmup (train.warmup_iters) or set train.clip_grad_norm"
            )


def _set_determinism(deterministic: bool, device: torch.device) -> None:
    if deterministic:
        # cuBLAS needs a fixed workspace for reproducible matmuls; it must be set before the first call.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = device.type == "cuda" and not deterministic


def _amp_dtype(amp: bool, device: torch.device) -> Optional[torch.dtype]:
    """bf16 where the GPU supports it (no loss scaling needed), else fp16; None off CUDA or with amp off."""
    if not amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _load_data(cfg: Config, say) -> tuple[Any, Any]:
    """The checked training split and (if ``data.val`` is set) the validation split in its class order."""
    from detect_ft.data.doctor import prepare_split

    d = cfg.data
    if not d.train:
        raise DetectFTError("config key 'data.train' is empty; set it to the training split (file, folder or name)")
    common = d.split_options()
    train_records, report = prepare_split(split=d.train, classes=list(d.classes) or None, **common)
    say(f"train: {len(train_records)} images, {train_records.num_boxes} boxes, classes {train_records.class_names} "
        f"({len(report.findings)} findings handled by the data.on_* policies)")  # fmt: skip
    val_records = None
    if d.val:
        # Decoded once now (strictly), so an unreadable validation image is found before training and
        # handled by data.on_unreadable_image instead of failing every validation; the training split is
        # checked as its images are loaded (see DetectionDataset).
        val_records, _ = prepare_split(split=d.val, classes=list(train_records.class_names), decode=True, **common)
        say(f"val: {len(val_records)} images, {val_records.num_boxes} boxes")
    return train_records, val_records


def _build_model(cfg: Config, num_classes: int, class_names: list[str]) -> torch.nn.Module:
    from detect_ft.models import build_model

    m = cfg.model
    return build_model(m.name, num_classes, m.weights, class_names, backbone=m.backbone or None,
                       init_from_coco_names=m.init_from_coco_names,
                       trainable_backbone_layers=m.trainable_backbone_layers, frozen_bn=m.frozen_bn,
                       min_size=m.min_size, max_size=m.max_size, score_thresh=m.score_thresh,
                       detections_per_img=m.detections_per_img)  # fmt: skip


def _epoch_loader(cfg: Config, dataset, info: dist_utils.DistInfo, epoch: int):
    """A loader seeded by ``seed + epoch``: an epoch's order and augmentation do not depend on the epochs
    before it, which is what lets a resumed run repeat the uninterrupted one exactly."""
    from detect_ft.data.dataset import build_loader, set_epoch

    t = cfg.train
    seed = t.seed + epoch
    loader = build_loader(dataset, batch_size=t.batch_size, shuffle=True, workers=t.workers,
                          distributed=info.distributed, aspect_ratio_grouping=t.aspect_ratio_grouping,
                          seed=seed, drop_last=False)  # fmt: skip
    set_epoch(loader, epoch)
    if info.distributed:
        # The sampler shards one shared permutation; the augmentation streams must differ per rank.
        rank_seed = seed + 100_003 * info.rank
        loader.generator.manual_seed(rank_seed)
        if t.workers == 0:
            dataset.set_seed(rank_seed)
    return loader


def _set_backbone_frozen(model: torch.nn.Module, name: str, frozen: bool, trainable: dict[str, bool]) -> None:
    from detect_ft.models import set_trainable_backbone_layers

    if frozen:
        set_trainable_backbone_layers(model, name, 0)
    else:  # back to what build_model chose (model.trainable_backbone_layers or its default)
        for param_name, parameter in model.named_parameters():
            parameter.requires_grad_(trainable.get(param_name, True))


def _wrap(model: torch.nn.Module, info: dist_utils.DistInfo, device: torch.device) -> torch.nn.Module:
    if not info.distributed:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def _check_resumable(checkpoint: dict, cfg: Config, class_names: list[str], path: Optional[Path]) -> None:
    if checkpoint.get("model_name") != cfg.model.name:
        raise DetectFTError(f"train.resume: {path} trained {checkpoint.get('model_name')} but model.name is "
                            f"{cfg.model.name}; resume with the same model.name")  # fmt: skip
    if list(checkpoint.get("class_names", [])) != class_names:
        raise DetectFTError(f"train.resume: {path} has classes {checkpoint.get('class_names')} but the data has "
                            f"{class_names}; resume with the same data.classes")  # fmt: skip


def eval_interval(eval_interval: Optional[int], epochs: int) -> int:
    """Epochs between validations: as given, or (None) about ten validations a run, the last epoch always."""
    return max(1, round(epochs / 10)) if eval_interval is None else eval_interval


def _validate_now(cfg: Config, val_records, epoch: int) -> bool:
    interval = eval_interval(cfg.train.eval_interval, cfg.train.epochs)
    return bool(val_records) and interval > 0 and ((epoch + 1) % interval == 0 or epoch + 1 == cfg.train.epochs)


def _validate(cfg: Config, model: torch.nn.Module, val_records, device: torch.device) -> dict[str, Any]:
    from detect_ft.evaluation.evaluator import evaluate_model

    e = cfg.eval
    return evaluate_model(model, val_records, device=device, batch_size=e.batch_size, workers=cfg.train.workers,
                          score_thresh=e.score_thresh, backend=e.backend, progress=False)  # fmt: skip


def _copy_atomic(source: Path, target: Path) -> None:
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def _banner(cfg: Config, info, device: torch.device, amp_dtype, num_images: int, val_records, iters: int) -> str:
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    amp = {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16 + GradScaler"}[amp_dtype]
    t = cfg.train
    banner = (f"training {cfg.model.name} on {device} ({where}), {info.world_size} process(es), AMP {amp}, "
              f"batch {t.batch_size} per process x accumulate {t.accumulate}, {iters} iterations/epoch, "
              f"{t.epochs} epochs -> {cfg.output.dir}")  # fmt: skip
    recipe = MODELS[cfg.model.name].recipe
    if recipe:
        banner += (f"\n{cfg.model.name}'s recipe, used for the keys the config leaves unset: "
                   + ", ".join(f"{key}={value}" for key, value in recipe))  # fmt: skip
    return banner


def _epoch_line(row: dict[str, Any], epochs: int, state: dict[str, Any], best_metric: str) -> str:
    loss = float("nan") if row["loss"] is None else row["loss"]
    line = f"epoch {row['epoch']}/{epochs}: loss {loss:.4f}, {row['img_s']:.1f} img/s, {row['time']:.1f}s"
    if row.get("map") is not None:
        line += f" | val map {row['map']:.4f} map50 {row['map50']:.4f}"
        line += f" | best {best_metric} {state['best_value']:.4f} @ epoch {state['best_epoch']}"
    elif row.get("note"):
        line += f" | val: {row['note']}"
    if row["skipped_steps"]:
        line += f" | {row['skipped_steps']} non-finite batches skipped"
    return line
