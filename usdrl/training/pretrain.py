"""Self-supervised pretraining: one device or many processes (torchrun / DDP), resumable, logged.

Released settings by default (SPEC.md 5): Adam 5e-4, weight decay 1e-5, learning rate x0.1 from
each milestone, 4 views, the released loss weights. All K views of a batch go through the encoder
together (nothing in it mixes samples); the projectors see each view's batch on its own, so their
BatchNorm statistics are per view as released. Under DDP the projectors' BatchNorm spans all processes and the
loss is computed on projections gathered from all processes with gradients, so W processes with
batch B give the loss and gradients of one process with batch W*B.

Randomness is derived from (seed, epoch, rank) at the start of every epoch, so an interrupted run
resumed from its last checkpoint continues exactly as if it had never stopped. A run killed at any
moment resumes cleanly: temporary files of dead writers are removed, ``log.jsonl`` is cut back to the
resumed epoch (one record per epoch), and a numbered checkpoint missing for that epoch is written.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from usdrl.data.atomic_files import atomic_file, write_json_atomically
from usdrl.data.store import SkeletonSplit, load_split
from usdrl.nn.augment import make_views
from usdrl.nn.distributed import gather_with_gradients
from usdrl.nn.encoders import SkeletonModel, skips_a_branch
from usdrl.nn.losses import mgfd_loss
from usdrl.settings.sections import AugmentSection, ConfigError, LossSection, ModelSection, Params, PretrainSection
from usdrl.skeleton import MODALITIES
from usdrl.training.checkpoint import recorded_modality
from usdrl.training.checkpoint_files import (
    CheckpointError,
    UnsafeCheckpointError,
    describe_content,
    load_checkpoint,
    save_atomically,
)
from usdrl.training.loop import (
    MixedPrecision,
    RunningTotals,
    TrainingError,
    progress_bar,
    set_learning_rate,
    step_decay_rate,
)
from usdrl.training.resume import (
    check_resumed_settings,
    check_run_folder,
    remove_stale_temporary_files,
    restore_rng_states,
    rng_states,
    run_folder_lock,
)
from usdrl.training.run_record import read_run_record, run_record_path
from usdrl.training.runtime import peak_memory_megabytes, resolve_device, seed_everything
from usdrl.training.settings_from_data import describe, resolve_for_split


class PretrainingObjective(nn.Module):
    """Views (K, N, C, T, V, M) -> per-view projections; the module DDP wraps."""

    def __init__(self, model: SkeletonModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, views: torch.Tensor, modality: str) -> dict[str, list[torch.Tensor]]:
        """Projections of views (K, N, C, T, V, M): z_t, z_s, z_i, each K tensors (N, D), BatchNorm per view."""
        count, batch = views.shape[:2]
        features = self.model.encode(views.flatten(0, 1), modality)["features"]  # (K*N, 2H)
        projections: dict[str, list[torch.Tensor]] = {"z_t": [], "z_s": [], "z_i": []}
        for view in range(count):  # BatchNorm statistics of each view's own batch
            projected = self.model.project({"features": features[view * batch:(view + 1) * batch]})
            for key in projections:
                projections[key].append(projected[key])
        return projections


def loss_terms(projections: dict[str, list[torch.Tensor]], loss: LossSection) -> dict[str, torch.Tensor]:
    """The loss on gathered float32 projections (batch statistics over all processes)."""
    gathered = {key: [gather_with_gradients(z.float()) for z in views] for key, views in projections.items()}
    return mgfd_loss(gathered["z_t"], gathered["z_s"], gathered["z_i"], loss)


def learning_rate_at(epoch: int, settings: PretrainSection) -> float:
    """Base rate times decay for every milestone reached (epochs 0-based, as released)."""
    return step_decay_rate(settings.learning_rate, settings.learning_rate_decay, settings.milestones, epoch)


def epoch_batches(count: int, batch_size: int, epoch: int, seed: int, rank: int, world_size: int) -> list[np.ndarray]:
    """This process's batches of one epoch: global batches of world_size * batch_size from one
    permutation seeded by (seed, epoch), each process taking its contiguous slice; the last partial
    global batch is dropped (BatchNorm needs full batches)."""
    permutation = np.random.default_rng([seed, epoch]).permutation(count)
    global_size = batch_size * world_size
    batches = []
    for start in range(0, count - global_size + 1, global_size):
        batches.append(permutation[start + rank * batch_size:start + (rank + 1) * batch_size])
    return batches


class SplitBatches(torch.utils.data.Dataset):
    """Whole batches of a prepared split: ``reader[positions]`` -> (x (n, C, T', V, M) float32, valid frames (n,)
    int64), T' the longest valid length of the batch (``SkeletonSplit.valid_batch``: only valid frames are read,
    the rest are zero; the augmentation reads no frame past a sample's valid length). In a DataLoader worker x is
    written straight into shared memory, so handing it to the main process copies nothing."""

    def __init__(self, split: SkeletonSplit) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, positions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        positions = np.asarray(positions)
        frames = torch.from_numpy(np.asarray(self.split.num_frames[positions], dtype=np.int64))
        if torch.utils.data.get_worker_info() is None:
            x = torch.from_numpy(self.split.valid_batch(positions))
        else:  # a new shared-memory file reads as zeros
            longest = max(int(frames.max()), 1) if len(positions) else 1
            shape = (len(positions), self.split.x.shape[1], longest, *self.split.x.shape[3:])
            storage = torch.UntypedStorage._new_shared(int(np.prod(shape)) * 4)
            x = torch.empty(0, dtype=torch.float32).set_(storage).view(shape)
            self.split.valid_batch(positions, out=x.numpy())
        return x, frames


def training_loader(split: SkeletonSplit, batches: list[np.ndarray], workers: int,
                    pin_memory: bool) -> torch.utils.data.DataLoader:
    """The (x, valid frames) batches of ``batches`` (index arrays into the split), in their order, read by
    ``workers`` processes (0: this one), pinned when ``pin_memory``."""
    return torch.utils.data.DataLoader(SplitBatches(split), sampler=batches, batch_size=None, num_workers=workers,
                                       pin_memory=pin_memory, persistent_workers=False)


def build_model(model: ModelSection, layout) -> SkeletonModel:
    """The model to pretrain: the model section's encoder for the layout, with projectors."""
    return SkeletonModel(model, layout=layout)


def warn_if_crops_never_happen(split: SkeletonSplit, minimum_crop: int) -> float:
    """The part of the clips shorter than the minimum temporal crop; a warning when it is most of them.

    The released crop length is clip(floor(n * s), minimum_crop, n): a clip of n <= minimum_crop frames is
    never cropped, so its views differ only spatially (``augment.minimum_crop: auto`` sets a crop that the
    data allows; docs/settings_from_data.md)."""
    uncropped = float(np.mean(np.asarray(split.num_frames) <= minimum_crop)) if len(split) else 0.0
    if uncropped > 0.5:
        warnings.warn(f"{100 * uncropped:.0f}% of the training clips of {split.root} have at most "
                      f"augment.minimum_crop={minimum_crop} frames, so they are never cropped in time; for short "
                      f"clips let the data set it (--set augment.minimum_crop=auto) or set it lower, e.g. "
                      f"--set augment.minimum_crop=8", stacklevel=3)
    return uncropped


class Pretrainer:
    """Holds the run: model, optimiser, scaler, data, and the directory with checkpoints and logs."""

    def __init__(self, data_root: str | Path, benchmark: str, out_dir: str | Path, model: ModelSection,
                 augment: AugmentSection, loss: LossSection, settings: PretrainSection, progress: bool = True) -> None:
        if settings.modality not in MODALITIES:
            raise ConfigError(f"unknown modality {settings.modality!r}; choose one of {', '.join(MODALITIES)}")
        self.settings, self.loss, self.model_section, self.augment = settings, loss, model, augment
        self.out_dir = Path(out_dir)
        self._join_processes()
        self.split = load_split(data_root, benchmark, "train")
        resolved, self.automatic = resolve_for_split(Params(model=model, augment=augment, pretrain=settings),
                                                     self.split, self.world_size)
        self.settings, self.model_section, self.augment = resolved.pretrain, resolved.model, resolved.augment
        self._check_batch_size(data_root, benchmark)  # before anything is built
        self.progress = progress and self.rank == 0
        if self.rank == 0 and self.automatic and progress:
            print(f"settings from the data ({benchmark} training split):\n{describe(self.automatic)}",
                  file=sys.stderr)
        if self.rank == 0:
            warn_if_crops_never_happen(self.split, self.augment.minimum_crop)
        self._build_model()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=settings.learning_rate,
                                          weight_decay=settings.weight_decay)
        self.start_epoch = 0
        self.run_info = self._run_info(data_root, benchmark)

    def _join_processes(self) -> None:
        """Device and precision (a ConfigError for ones this machine lacks), then the process group under
        torchrun: rank and world size."""
        self.distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        self.device = resolve_device(self.settings.device)
        self.mixed_precision = MixedPrecision(self.device, self.settings.precision)
        if self.distributed and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.rank = dist.get_rank() if self.distributed else 0
        self.world_size = dist.get_world_size() if self.distributed else 1
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)

    def _check_batch_size(self, data_root: str | Path, benchmark: str) -> None:
        """A ConfigError when the training split holds less than one global batch."""
        split = self.split
        global_batch = self.settings.batch_size * self.world_size
        if len(split) < global_batch:
            suggestion = max(2, len(split) // (4 * self.world_size))
            raise ConfigError(f"the {benchmark} training split of {data_root} has {len(split)} samples, fewer "
                              f"than one batch of {global_batch}; lower --batch-size "
                              f"(pretrain.batch_size), e.g. --batch-size {suggestion}")
        return split

    def _build_model(self) -> None:
        """The model from the seed, and the objective the optimiser steps through (DDP-wrapped under torchrun)."""
        seed_everything(self.settings.seed)  # the initial weights
        self.model = build_model(self.model_section, self.split.layout).to(self.device)
        objective: nn.Module = PretrainingObjective(self.model)
        if self.distributed:  # the projectors' GlobalBatchNorm already spans all processes
            objective = nn.parallel.DistributedDataParallel(
                objective, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=skips_a_branch(self.model_section))  # alpha 0 / 1: one branch has no gradient
        self.objective = objective

    def _run_info(self, data_root: str | Path, benchmark: str) -> dict[str, Any]:
        """What run.json and every checkpoint record of the run: data, settings, processes, device, precision."""
        return {
            "data": {"root": str(data_root), "benchmark": benchmark, "split": "train", "samples": len(self.split),
                     "manifest_fingerprint": self.split.manifest.get("input_fingerprint")},
            "model": asdict(self.model_section), "augment": asdict(self.augment), "loss": asdict(self.loss),
            "pretrain": asdict(self.settings), "automatic": self.automatic, "world_size": self.world_size, "device": str(self.device),
            "precision": str(self.mixed_precision.dtype or torch.float32),
        }

    # -- checkpoints ------------------------------------------------------------------------------
    def checkpoint_path(self, epoch: int) -> Path:
        """The numbered checkpoint after ``epoch`` epochs."""
        return self.out_dir / "checkpoints" / f"checkpoint_{epoch:04d}.pt"

    @property
    def last_path(self) -> Path:
        """The checkpoint of the newest epoch, the one a resume starts from."""
        return self.out_dir / "checkpoints" / "last.pt"

    def is_scheduled(self, epochs_done: int) -> bool:
        """Whether the schedule keeps a numbered checkpoint after this many epochs."""
        return epochs_done > 0 and (epochs_done % self.settings.checkpoint_every == 0
                                    or epochs_done == self.settings.epochs)

    def save(self, epochs_done: int) -> None:
        """Rank 0: last.pt after this many epochs, and the numbered checkpoint when the schedule keeps one."""
        if self.rank != 0:
            return
        content = {
            "epoch": epochs_done, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scaler": self.mixed_precision.scaler.state_dict(), "rng": rng_states(),
            "encoder_config": self.model.encoder_record(), "layout": self.split.layout.to_dict(), "run": self.run_info,
        }
        # the numbered one first: once last.pt says epoch E, checkpoint E exists (a kill between re-runs epoch E)
        if self.is_scheduled(epochs_done):
            save_atomically(content, self.checkpoint_path(epochs_done))
        save_atomically(content, self.last_path)

    def clean_interrupted_writes(self) -> None:
        """Rank 0, before anything else: temporary files left by killed writers go."""
        if self.rank == 0:
            for folder in (self.out_dir, self.out_dir / "checkpoints"):
                remove_stale_temporary_files(folder)

    def intact_checkpoint_hint(self) -> str:
        """Which numbered checkpoint still loads, for the error about a damaged last.pt."""
        for path in sorted(self.last_path.parent.glob("checkpoint_*.pt"), reverse=True):
            try:
                load_checkpoint(path)
            except CheckpointError:
                continue
            return f"the newest intact checkpoint is {path}: continue from it with --resume {path}"
        return f"no numbered checkpoint in {self.last_path.parent} is intact: start again with a new --out"

    def resume(self, path: str | Path | None = None) -> bool:
        """Restore model, optimiser, scaler, epoch and RNG states; False when there is nothing to resume.

        Without ``path``: OUT/checkpoints/last.pt if it exists. A damaged last.pt stops with the newest
        intact numbered checkpoint to resume from; a given path that is not a checkpoint of usdrl pretrain,
        or one of other model settings, stops with a CheckpointError naming it.
        """
        explicit = path is not None
        path = Path(path) if explicit else self.last_path
        if not explicit and not path.exists():
            return False
        try:
            content = load_checkpoint(path, map_location=self.device)
        except UnsafeCheckpointError:
            raise
        except CheckpointError as error:
            raise CheckpointError(f"{error}; {self.intact_checkpoint_hint()}" if not explicit else str(error)) from None
        needed = ("epoch", "model", "optimizer", "scaler", "rng", "encoder_config")
        if not isinstance(content, dict) or any(key not in content for key in needed):
            raise CheckpointError(f"{path} is not a checkpoint of usdrl pretrain (it holds "
                                  f"{describe_content(content)}); --resume takes OUT/checkpoints/last.pt or "
                                  f"checkpoint_NNNN.pt of a pretraining run")
        ours = self.model.encoder_record()
        stored = content["encoder_config"] if isinstance(content["encoder_config"], dict) else {}
        differences = [f"{key} {stored.get(key)!r} (this run: {value!r})" for key, value in ours.items()
                       if stored.get(key) != value]
        if differences:
            raise CheckpointError(f"{path} holds an encoder made with other settings: {', '.join(differences)}; "
                                  f"resume with the same model settings or start a new --out")
        self.check_same_data(path, content.get("run"))
        recorded = recorded_modality(content)
        if recorded and recorded != self.settings.modality:
            raise CheckpointError(f"{path} was pretrained on {recorded}, but this run is on {self.settings.modality}; "
                                  f"resume with --modality {recorded} or start a new --out")
        try:
            self.model.load_state_dict(content["model"])
            self.optimizer.load_state_dict(content["optimizer"])
            self.mixed_precision.scaler.load_state_dict(content["scaler"])
            restore_rng_states(content["rng"])
        except (RuntimeError, KeyError, ValueError, TypeError) as error:
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise CheckpointError(f"{path} does not fit this run: {message}") from None
        self.start_epoch = int(content["epoch"])
        numbered = self.checkpoint_path(self.start_epoch)
        if self.rank == 0 and self.is_scheduled(self.start_epoch) and not numbered.is_file():
            save_atomically(content, numbered)  # the run was stopped before it was written
        return True

    def check_same_data(self, path: Path, run: Any) -> None:
        """A TrainingError when the run recorded in ``run`` (run.json, or the record in a checkpoint ``path``) was
        trained on other data (manifest fingerprint, benchmark or training split size) than this run's: a run's
        record never claims data it was not trained on."""
        run = run if isinstance(run, dict) else {}
        stored = run.get("data") if isinstance(run.get("data"), dict) else {}
        current = self.run_info["data"]
        changed = [key for key in ("manifest_fingerprint", "benchmark", "samples")
                   if key in stored and stored[key] != current[key]]
        if changed:
            found = ", ".join(f"{key} {stored[key]} (now {current[key]})" for key in changed)
            raise TrainingError(f"{path} was trained on other data than {current['root']} holds now: {found}; "
                                f"start over in a new folder (usdrl pretrain ... --out NEW), or remove "
                                f"{self.out_dir} to retrain there")

    def truncate_log(self) -> None:
        """Keep the log records of the epochs done (epoch <= start_epoch): one record per epoch after a resume."""
        path = self.out_dir / "log.jsonl"
        if self.rank != 0 or not path.is_file():
            return
        kept = []
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill
                continue
            epoch = record.get("epoch") if isinstance(record, dict) else None
            if isinstance(epoch, int) and epoch <= self.start_epoch:
                kept.append(line + "\n")
        with atomic_file(path) as temporary:
            temporary.write_text("".join(kept))

    # -- training ---------------------------------------------------------------------------------
    def batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This process's (x (N, C, T, V, M), valid frames (N,)) batches of one epoch (``epoch_batches``)."""
        indices = epoch_batches(len(self.split), self.settings.batch_size, epoch, self.settings.seed, self.rank,
                                self.world_size)
        loader = training_loader(self.split, indices, self.settings.workers, pin_memory=self.device.type == "cuda")
        yield from loader

    def step(self, x: torch.Tensor, num_frames: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """The loss terms of one batch: its views drawn from ``generator``, projected under autocast."""
        x = x.to(self.device, non_blocking=True)
        views = make_views(x, num_frames.to(self.device), generator, self.augment,
                           self.model_section.clip_frames)  # (K, N, C, T, V, M)
        with self.mixed_precision.autocast():
            projections = self.objective(views, self.settings.modality)
        terms = loss_terms(projections, self.loss)
        return terms

    def log(self, record: dict[str, Any]) -> None:
        """Rank 0: append one JSON record to OUT/log.jsonl."""
        if self.rank != 0:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_dir / "log.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def train(self) -> dict[str, Any]:
        """Train from ``start_epoch`` to the last epoch: one log record after each, and last.pt after each (or
        once ``pretrain.last_checkpoint_seconds`` have passed since the previous one, and at numbered ones)."""
        if self.rank == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomically(run_record_path(self.out_dir), self.run_info)
            self.truncate_log()
        history, saved_at = [], time.perf_counter()
        for epoch in range(self.start_epoch, self.settings.epochs):
            record = self.train_epoch(epoch)
            self.log(record)
            history.append(record)
            due = time.perf_counter() - saved_at >= self.settings.last_checkpoint_seconds
            if due or self.is_scheduled(epoch + 1):
                self.save(epoch + 1)
                saved_at = time.perf_counter()
        return {"out": str(self.out_dir), "epochs": self.settings.epochs, "resumed_from": self.start_epoch,
                "last_checkpoint": str(self.last_path), "history": history}

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """One epoch (0-based) from its own seeds; its record: rate, mean loss terms, speed and memory."""
        settings = self.settings
        epoch_seed = settings.seed * 1_000_003 + epoch * 1009 + self.rank
        torch.manual_seed(epoch_seed)  # drop path and anything else drawn from the global generator
        generator = torch.Generator(device=self.device).manual_seed(epoch_seed)
        rate = learning_rate_at(epoch, settings)
        set_learning_rate(self.optimizer, rate)
        self.objective.train()
        totals = RunningTotals()
        steps, samples, started = 0, 0, time.perf_counter()
        bar = progress_bar(self.batches(epoch), f"epoch {epoch + 1}/{settings.epochs}", self.progress,
                           total=len(self.split) // (settings.batch_size * self.world_size))
        for x, num_frames in bar:
            terms = self.step(x, num_frames, generator)
            total = terms["total"]
            if not torch.isfinite(total):
                kept = self.last_path if self.last_path.is_file() else "none yet"
                raise TrainingError(f"non-finite loss ({total.item()}) at epoch {epoch + 1}, step {steps + 1}; "
                                    f"nothing was saved from this epoch; last good checkpoint: {kept}. "
                                    f"Lower the learning rate or use --precision fp32, then --resume")
            self.mixed_precision.step(total, self.optimizer)
            steps += 1
            samples += x.shape[0] * self.world_size
            totals.add(**{name: float(value.detach()) for name, value in terms.items()})
            bar.set_postfix(loss=f"{totals.sums['total'] / steps:.3f}")
            if settings.log_every and steps % settings.log_every == 0:
                self.log({"epoch": epoch + 1, "step": steps, "lr": rate, "loss": float(total.detach())})
        if steps == 0:
            raise TrainingError("no full batch in an epoch; lower --batch-size")
        elapsed = time.perf_counter() - started
        return {"epoch": epoch + 1, "lr": rate, **totals.means(steps), "samples_per_second": samples / elapsed,
                "seconds": elapsed, "peak_memory_mb": peak_memory_megabytes(self.device)}

    def close(self) -> None:
        """Leave the process group, if this run joined one."""
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def pretrain(data_root: str | Path, benchmark: str, out_dir: str | Path, model: ModelSection = ModelSection(),
             augment: AugmentSection = AugmentSection(), loss: LossSection = LossSection(),
             settings: PretrainSection = PretrainSection(), resume: bool | str | Path = False,
             progress: bool = True) -> dict[str, Any]:
    """Pretrain on the ``train`` split of a prepared dataset; returns a summary with the epoch history.

    ``out_dir`` must be absent or empty, or with ``resume`` a run of usdrl pretrain to continue with its recorded
    settings (``check_resumed_settings``). The first process (rank 0) holds the folder's lock for the whole run:
    a second usdrl pretrain into the same folder is refused."""
    first = int(os.environ.get("RANK", "0")) == 0  # the folder is checked and locked by the first process only
    if first:
        check_run_folder(out_dir, resume)  # before the lock file is made: a folder of the user's is never touched
    trainer = Pretrainer(data_root, benchmark, out_dir, model, augment, loss, settings, progress)  # writes nothing
    try:
        with run_folder_lock(out_dir) if trainer.rank == 0 else contextlib.nullcontext():
            if trainer.rank == 0:
                check_run_folder(out_dir, resume)  # again, now that no other run can change the folder
            recorded = read_run_record(out_dir, missing_ok=True) if trainer.rank == 0 and resume else None
            if recorded is not None:
                trainer.check_same_data(run_record_path(out_dir), recorded)
                check_resumed_settings(out_dir, trainer.run_info)
            trainer.clean_interrupted_writes()
            if resume:
                trainer.resume(None if resume is True else resume)
            return trainer.train()
    finally:
        trainer.close()
