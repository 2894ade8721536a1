"""``train(cfg) -> run_dir``: the fine-tuning run, from data checks to the end-of-run summary.

    cfg = load_config("configs/demo.yaml", ["train.epochs=5"])
    run_dir = train(cfg)      # <output.dir>/: config.yaml, metrics.jsonl, checkpoints/, plots/, tensorboard/
    train(cfg, hooks=[MyHook()])   # detect_ft.engine.hooks.Hook subclasses, called after the built-in ones

This module turns the config into a :class:`~detect_ft.engine.run.Run` (data, model, optimizer,
schedule, EMA, resume, and the one :class:`~detect_ft.engine.run.TrainOptions` the loop reads) and the
built-in hooks (:func:`~detect_ft.engine.hooks.default_hooks`), then calls :func:`~detect_ft.engine.fit.fit`.
Under ``torchrun`` every process runs it: DDP with a DistributedSampler, losses and img/s reduced over
ranks, and rank 0 alone validating (on the whole validation split, with the unwrapped or EMA model),
writing files and logging while the others wait. Its messages are ``logging`` records
(:func:`~detect_ft.engine.logs.console_messages` says where they show). This is the only engine module
that reads Config.
"""

from __future__ import annotations

import copy
import functools
import logging
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from detect_ft.checkpoint import format as ckpt
from detect_ft.checkpoint.training import (
    check_resumable,
    load_checkpoint,
    resolve_resume,
    restore_training_state,
    set_rng_state,
)
from detect_ft.config.schema import Config, config_to_dict, save_config
from detect_ft.config.values import duration_seconds
from detect_ft.data.sampling import repeat_factors, repeat_factors_line
from detect_ft.engine import distributed as dist_utils
from detect_ft.engine.budget import RunLength, TimeBudget, eval_interval, frozen_epochs
from detect_ft.engine.determinism import DeterminismSettings, seed_everything, set_determinism
from detect_ft.engine.fit import fit
from detect_ft.engine.hooks import Hook, default_hooks
from detect_ft.engine.logs import console_messages
from detect_ft.engine.multiscale import MultiScale, check_multi_scale
from detect_ft.engine.optim import build_optimizer, build_scheduler, optimizer_steps_per_epoch, resolve_warmup_iters
from detect_ft.engine.run import Run, TrainOptions
from detect_ft.engine.rundir import choose_run_dir, remove_unused
from detect_ft.engine.state import RunState
from detect_ft.engine.steps import choose_amp_dtype
from detect_ft.engine.tracking import MlflowTracker, TrackStore, open_store, require_mlflow, track_settings
from detect_ft.utils.errors import DetectFTError

__all__ = ["eval_interval", "seed_everything", "train"]

LOG = logging.getLogger(__name__)
# The EMA's decay at the run's n-th optimizer step is min(train.ema_decay, 1 - n^-EMA_WARMUP_POWER) (timm's
# ModelEmaV3 warm-up): its averaging window grows as n^0.75, a shrinking share of the run (docs/training.md).
EMA_WARMUP_POWER = 0.75


def train(cfg: Config, progress: bool = True, hooks: Sequence[Hook] = ()) -> Path:
    """Fine-tune ``cfg.model.name`` on ``cfg.data`` as ``cfg.train`` says; return the run directory.

    Args:
        progress: show a progress bar per epoch (rank 0).
        hooks: more :class:`~detect_ft.engine.hooks.Hook` objects, called on every rank after the built-in ones.

    The banner, the epoch lines and the summary are logged at INFO, by rank 0 only; a caller who configured
    no logging sees them on stdout (:func:`~detect_ft.engine.logs.console_messages`).

    Raises:
        DataError: the data checks found problems at policy ``error`` (nothing is trained).
        DetectFTError: a bad resume checkpoint, or ``train.max_nonfinite`` non-finite losses in a row.
    """
    started = time.perf_counter()  # train.time_budget counts from here
    determinism = DeterminismSettings.current()  # train.deterministic changes them for this run only
    group_before = torch.distributed.is_available() and torch.distributed.is_initialized()
    info, device = dist_utils.init_distributed(cfg.train.device)
    try:
        with console_messages(info.is_main):
            set_determinism(cfg.train.deterministic, device)
            run, run_dir, built_in = _prepare(cfg, info, device, progress, started)
            fit(run, [*built_in, *hooks])
        dist_utils.barrier()
        return run_dir
    finally:
        determinism.restore()
        if not group_before:  # a process group the caller set up is the caller's to end
            dist_utils.cleanup_distributed()


def _prepare(
    cfg: Config, info: dist_utils.DistInfo, device: torch.device, progress: bool, started: float
) -> tuple[Run, Path, list]:
    """The run (resumed where ``train.resume`` says, fitted to ``train.time_budget`` counted from
    ``started``), its directory, and the built-in hooks (multi-scale on every rank, the others on rank 0)."""
    t = cfg.train
    if info.distributed and t.sync_bn and device.type != "cuda":
        raise DetectFTError(
            "train.sync_bn=true needs CUDA devices (PyTorch's SyncBatchNorm runs on GPUs only); "
            "set train.sync_bn=false to train with DDP on CPUs"
        )
    check_multi_scale(cfg.model.name, t.multi_scale)
    if t.track == "mlflow":  # every rank refuses, before any data is read or folder made
        require_mlflow()
    train_records, val_records = _load_data(cfg)
    store = _open_tracking(cfg) if info.is_main else None
    class_names, category_ids = list(train_records.class_names), list(train_records.category_ids)
    run_dir, cfg, created = _choose_run_dir(cfg, info)
    try:  # refused before writing anything (weights, resume): no empty run folder stays behind
        model, trainable, anchor_line = _build_model(cfg, info, device, train_records)
        dataset = _build_dataset(cfg, train_records)
        iters = len(_epoch_loader(cfg, dataset, info, 0))
        iters = min(iters, t.max_iters_per_epoch) if t.max_iters_per_epoch else iters
        run = _build_run(cfg, info, device, model, trainable, dataset, iters, val_records, progress)
        _resume(run, cfg, run_dir, class_names)
        budget_line = _fit_budget(run, cfg, started, val_records, iters)
    except BaseException:
        remove_unused(created)
        raise
    hooks: list[Hook] = [MultiScale(t.multi_scale, seed=t.seed)] if t.multi_scale else []  # every rank
    if info.is_main:
        save_config(cfg, run_dir / "config.yaml")
        hooks += default_hooks(
            run_dir,
            model_name=cfg.model.name,
            class_names=class_names,
            category_ids=category_ids,
            config=config_to_dict(cfg),
            best_metric=t.best_metric,
            patience=t.patience,
            time_budget=run.budget.seconds if run.budget else None,
            started=started,
        )
        hooks += _trackers(cfg, run_dir, store)
    LOG.info(_banner(cfg, info, device, run.options.amp_dtype, len(dataset), val_records, iters))
    sampling_line = repeat_factors_line(repeat_factors(train_records.records, t.repeat_threshold), t.repeat_threshold)
    for line in (budget_line, anchor_line, sampling_line):
        if line:
            LOG.info(line)
    return run, run_dir, hooks


def _open_tracking(cfg: Config) -> Optional[TrackStore]:
    """The MLflow store ``train.track=mlflow`` records into, opened before the run folder is made (a store
    that cannot be opened refuses the run without leaving a folder); None without tracking."""
    t = cfg.train
    if t.track != "mlflow":
        return None
    return open_store(track_settings(cfg.output.dir, cfg.data.root, t.track_uri, t.track_experiment))


def _trackers(cfg: Config, run_dir: Path, store: Optional[TrackStore]) -> list[Hook]:
    """The tracker recording the run into ``store`` (rank 0 only), after the hooks that write the files it
    uploads; [] without one."""
    if store is None:
        return []
    dataset = Path(cfg.data.root or cfg.data.train).resolve().name
    tags = {"model": cfg.model.name, "dataset": dataset, "weights": cfg.model.weights}
    return [MlflowTracker(store, run_dir=run_dir, config=config_to_dict(cfg), tags=tags)]


def _choose_run_dir(cfg: Config, info: dist_utils.DistInfo) -> tuple[Path, Config, tuple[Path, ...]]:
    """The run directory (rank 0 picks and creates it, so an earlier run is never written over), the
    config that config.yaml and the checkpoints record (the directory actually used, and no overwrite
    for a rerun of that config), and the folders this rank created for it."""
    t = cfg.train
    chosen = choose_run_dir(cfg.output.dir, resume=t.resume, overwrite=cfg.output.overwrite) if info.is_main else None
    run_dir, note, created = dist_utils.broadcast_object(chosen)
    if note:
        LOG.info(note)
    cfg = copy.deepcopy(cfg)
    cfg.output.dir, cfg.output.overwrite = str(run_dir), False
    return run_dir, cfg, created if info.is_main else ()


def _build_model(cfg: Config, info: dist_utils.DistInfo, device: torch.device, train_records):
    """The detector on ``device`` (the same initial weights on every rank), which parameters train, and
    the banner line about anchors fitted to ``train_records`` (``model.anchors=auto``; '' without)."""
    from detect_ft.models import build_model
    from detect_ft.models.anchors import fit_and_set_anchors

    m, t = cfg.model, cfg.train
    class_names = list(train_records.class_names)
    seed_everything(t.seed)
    model = build_model(
        m.name,
        len(class_names),
        m.weights,
        class_names,
        backbone=m.backbone or None,
        init_from_coco_names=m.init_from_coco_names,
        trainable_backbone_layers=m.trainable_backbone_layers,
        frozen_bn=m.frozen_bn,
        min_size=m.min_size,
        max_size=m.max_size,
        score_thresh=m.score_thresh,
        detections_per_img=m.detections_per_img,
        anchor_sizes=m.anchor_sizes,
        anchor_ratios=m.anchor_ratios,
    )
    anchor_line = ""
    if m.anchors == "auto" and not (m.anchor_sizes or m.anchor_ratios):
        # Recorded in the run's config (config.yaml, checkpoints), so every rebuild of the model has them.
        fit = fit_and_set_anchors(model, m.name, train_records.records)
        m.anchor_sizes, m.anchor_ratios = fit.fitted.config_values()
        anchor_line = fit.summary()
    trainable = {name: p.requires_grad for name, p in model.named_parameters()}
    if info.distributed and t.sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if t.channels_last:  # faster on GPUs, and for depthwise convs (EfficientNet, MobileNet) on CPUs too
        model.to(memory_format=torch.channels_last)
    seed_everything(t.seed + info.rank)  # per-rank randomness (e.g. Faster R-CNN's box sampling)
    return model, trainable, anchor_line


def _build_dataset(cfg: Config, train_records):
    from detect_ft.data.dataset import DetectionDataset
    from detect_ft.data.transforms import build_transform

    a = cfg.augment
    transform = build_transform(
        a.preset, train=True, min_area=a.min_area, min_visibility=a.min_visibility, crop_size=a.crop_size
    )
    return DetectionDataset(train_records, transform, on_unreadable=cfg.data.on_unreadable_image)


def _build_run(cfg: Config, info, device, model, trainable, dataset, iters: int, val_records, progress: bool) -> Run:
    """A new run of ``model`` on ``dataset``: optimizer, LR schedule, AMP, EMA, validation and the loop's
    options as ``cfg`` says."""
    t = cfg.train
    optimizer, scheduler = _build_optimization(cfg, model, iters)
    amp_dtype = choose_amp_dtype(t.amp, device)
    options = TrainOptions(
        amp_dtype=amp_dtype,
        accumulate=t.accumulate,
        clip_grad_norm=t.clip_grad_norm,
        max_iters=t.max_iters_per_epoch,
        max_nonfinite=t.max_nonfinite,
        progress=progress,
    )
    evaluate = (
        _validation(cfg, val_records, dataset.records, device, progress and info.is_main) if val_records else None
    )
    return Run(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        device=device,
        info=info,
        epochs=t.epochs,
        make_loader=functools.partial(_epoch_loader, cfg, dataset, info),
        model_name=cfg.model.name,
        trainable=trainable,
        freeze_backbone_epochs=frozen_epochs(t.freeze_backbone_epochs, t.freeze_backbone_fraction, t.epochs),
        scaler=torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None,
        ema=_build_ema(model, t.ema_decay) if t.ema else None,
        options=options,
        evaluate=evaluate,
        eval_interval=eval_interval(t.eval_interval, t.epochs),
        best_metric=t.best_metric,
    )


def _build_ema(model: torch.nn.Module, decay: float):
    """timm's ``ModelEmaV3`` of ``model``: a copy in eval mode, without gradients, whose floating-point
    parameters and buffers average the model's after each optimizer step, the decay warming up."""
    from timm.utils.model_ema import ModelEmaV3

    ema = ModelEmaV3(model, decay=decay, use_warmup=True, warmup_power=EMA_WARMUP_POWER)
    ema.requires_grad_(False)
    return ema


def _build_optimization(cfg: Config, model: torch.nn.Module, iters: int) -> tuple[torch.optim.Optimizer, Any]:
    """The optimizer and the per-step LR schedule (warmup included) for ``iters`` batches an epoch."""
    t = cfg.train
    steps_per_epoch = optimizer_steps_per_epoch(iters, t.accumulate)
    optimizer = build_optimizer(
        model,
        cfg.model.name,
        optimizer=t.optimizer,
        lr=t.lr,
        momentum=t.momentum,
        nesterov=t.nesterov,
        weight_decay=t.weight_decay,
        backbone_lr_mult=t.backbone_lr_mult,
    )
    warmup_iters, warmup_note = resolve_warmup_iters(t.warmup_iters, t.epochs * steps_per_epoch)
    if warmup_note:
        LOG.info(warmup_note)
    scheduler = build_scheduler(
        optimizer,
        scheduler=t.scheduler,
        total_steps=t.epochs * steps_per_epoch,
        steps_per_epoch=steps_per_epoch,
        warmup_iters=warmup_iters,
        milestones=t.milestones,
        gamma=t.gamma,
    )
    return optimizer, scheduler


def _resume(run: Run, cfg: Config, run_dir: Path, class_names: list[str]) -> None:
    """Restore weights, optimizer, schedule, EMA, RNG and ``run.state`` from the checkpoint that
    ``train.resume`` names (rank 0 reads it, every rank restores it); nothing for a new run."""
    info = run.info
    resume_path = resolve_resume(cfg.train.resume, run_dir) if info.is_main else None
    checkpoint = dist_utils.broadcast_object(load_checkpoint(resume_path) if resume_path else None)
    if checkpoint is None:
        return
    check_resumable(
        checkpoint,
        resume_path,
        model_name=cfg.model.name,
        class_names=class_names,
        anchor_sizes=cfg.model.anchor_sizes,
        anchor_ratios=cfg.model.anchor_ratios,
    )
    try:
        restore_training_state(checkpoint, **run.training_objects())
        run.state = RunState.from_checkpoint(checkpoint)
        saved_rng = checkpoint.get(ckpt.RNG) or []
        if len(saved_rng) == info.world_size:
            set_rng_state(saved_rng[info.rank])
    except (KeyError, ValueError, TypeError, RuntimeError, IndexError, AttributeError) as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise DetectFTError(
            f"train.resume: {resume_path} does not fit this run ({reason}); resume with the "
            "config it was trained with, or start a new run"
        ) from None
    LOG.info(f"resumed from {resume_path} after epoch {run.state.epoch} (step {run.state.iteration})")


def _fit_budget(run: Run, cfg: Config, started: float, val_records, iters: int) -> str:
    """With ``train.time_budget``: fit ``run`` to it and record the planned epochs in ``cfg``; the banner
    line ('' without a budget)."""
    t = cfg.train
    seconds = duration_seconds("train.time_budget", t.time_budget)
    if seconds is None:
        return ""
    length = RunLength(t.freeze_backbone_epochs, t.freeze_backbone_fraction, t.eval_interval, bool(val_records))
    run.budget = TimeBudget.for_run(
        run,
        seconds,
        started=started,
        length=length,
        steps_per_epoch=optimizer_steps_per_epoch(iters, t.accumulate),
        warmup_iters=t.warmup_iters,
        val_images=len(val_records or []),
    )
    t.epochs = run.epochs
    return run.budget.describe(run)


def _load_data(cfg: Config) -> tuple[Any, Any]:
    """The checked training split (every file's header and end checked now, not when the loader reaches
    it: datasets/README.md) and (if ``data.val`` is set) the validation split in its class order."""
    from detect_ft.data.checks.findings import summarize
    from detect_ft.data.split import SplitSpec, load_checked_split

    d = cfg.data
    if not d.train:
        raise DetectFTError("config key 'data.train' is empty; set it to the training split (file, folder or name)")
    spec = SplitSpec.from_config(d)
    train_records, report = load_checked_split(spec, d.train, d.classes)
    LOG.info(
        f"train: {len(train_records)} images, {train_records.num_boxes} boxes, classes {train_records.class_names} "
        f"({summarize(report.findings)})"
    )
    val_records = None
    if d.val:
        # Decoded once now (strictly), so an unreadable validation image is found before training and
        # handled by data.on_unreadable_image instead of failing every validation.
        val_records, val_report = load_checked_split(spec, d.val, train_records.class_names, decode=True)
        LOG.info(f"val: {len(val_records)} images, {val_records.num_boxes} boxes ({summarize(val_report.findings)})")
    return train_records, val_records


def _epoch_loader(cfg: Config, dataset, info: dist_utils.DistInfo, epoch: int):
    """A loader seeded by ``seed + epoch``: an epoch's order and augmentation do not depend on the epochs
    before it, which is what lets a resumed run repeat the uninterrupted one exactly."""
    from detect_ft.data.dataset import build_loader, set_epoch

    t = cfg.train
    seed = t.seed + epoch
    loader = build_loader(
        dataset,
        batch_size=t.batch_size,
        shuffle=True,
        workers=t.workers,
        distributed=info.distributed,
        aspect_ratio_grouping=t.aspect_ratio_grouping,
        seed=seed,
        drop_last=False,
        # Rare-class images drawn more often; the epoch keeps its length, so the schedule and budget hold.
        repeat_factors=repeat_factors(dataset.records.records, t.repeat_threshold) if t.repeat_threshold > 0 else None,
    )
    set_epoch(loader, epoch)
    if info.distributed:
        # The sampler shards one shared permutation; the augmentation streams must differ per rank.
        rank_seed = seed + 100_003 * info.rank
        loader.generator.manual_seed(rank_seed)
        if t.workers == 0:
            dataset.set_seed(rank_seed)
    return loader


def _validation(cfg: Config, val_records, train_records, device: torch.device, progress: bool):
    """``model -> metrics`` on the validation split as the ``eval.*`` keys say, after recomputing the
    BatchNorm statistics on a fixed subset of the training split (:mod:`detect_ft.engine.batchnorm`)."""
    from detect_ft.engine.batchnorm import calibration_records, evaluate_recalibrated
    from detect_ft.evaluation.evaluator import evaluate_model
    from detect_ft.inference.slicing import slice_options

    e = cfg.eval
    common = dict(device=device, batch_size=e.batch_size, workers=cfg.train.workers)
    options = dict(score_thresh=e.score_thresh, backend=e.backend, desc="validate", slicing=slice_options(e))
    evaluate = functools.partial(evaluate_model, dataset=val_records, progress=progress, **common, **options)
    calibration = calibration_records(train_records)
    return functools.partial(evaluate_recalibrated, evaluate=evaluate, calibration=calibration, **common)


def _banner(cfg: Config, info, device: torch.device, amp_dtype, num_images: int, val_records, iters: int) -> str:
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    amp = {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16 + GradScaler"}[amp_dtype]
    t = cfg.train
    banner = (
        f"training {cfg.model.name} on {device} ({where}), {info.world_size} process(es), AMP {amp}, "
        f"batch {t.batch_size} per process x accumulate {t.accumulate}, {iters} iterations/epoch, "
        f"{t.epochs} epochs -> {cfg.output.dir}"
    )
    if cfg.applied_recipe:
        banner += f"\n{cfg.model.name}'s recipe, for the keys the config left unset: " + ", ".join(cfg.applied_recipe)
    return banner
