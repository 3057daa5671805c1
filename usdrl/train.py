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

import json
import os
import random
import re
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
from tqdm.auto import tqdm

from usdrl.augment import make_views
from usdrl.checkpoint import (
    CheckpointError,
    UnsafeCheckpointError,
    describe_content,
    load_checkpoint,
    plain_numpy_random_state,
    recorded_modality,
    save_atomically,
)
from usdrl.config import AugmentSection, ConfigError, LossSection, ModelSection, PretrainSection
from usdrl.data import load_split
from usdrl.data.store import SkeletonSplit, atomic_file, write_json_atomically
from usdrl.distributed import gather_with_gradients
from usdrl.losses import mgfd_loss
from usdrl.model import SkeletonModel
from usdrl.runtime import (
    autocast_context,
    autocast_settings,
    collate_trimmed,
    peak_memory_megabytes,
    resolve_device,
    seed_everything,
)
from usdrl.skeleton import MODALITIES


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, bad resume); the message says what was kept."""


class PretrainingObjective(nn.Module):
    """Views (K, N, C, T, V, M) -> per-view projections; the module DDP wraps."""

    def __init__(self, model: SkeletonModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, views: torch.Tensor, modality: str) -> dict[str, list[torch.Tensor]]:
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
    passed = sum(epoch >= milestone for milestone in settings.milestones)
    return settings.learning_rate * settings.learning_rate_decay ** passed


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


class SplitDataset(torch.utils.data.Dataset):
    """(sample (C, T, V, M) float32, valid frames) of a prepared split; read from the memory map."""

    def __init__(self, split: SkeletonSplit) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(self.split.sample(position)), int(self.split.num_frames[position])


def _rng_states() -> dict[str, Any]:
    """Every global RNG state as tensors and plain containers (loadable with weights_only=True)."""
    states = {"python": random.getstate(), "numpy": plain_numpy_random_state(np.random.get_state()),
              "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _restore_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"].cpu())
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([state.cpu() for state in states["cuda"]])


def process_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


# the temporary names of this module's atomic writes (checkpoints, log, run info): NAME.tmp-PID
OUR_TEMPORARY_FILE = re.compile(r"(checkpoint_\d+\.pt|last\.pt|log\.jsonl|run\.json)\.tmp-(\d+)")


def remove_stale_temporary_files(folder: Path) -> list[Path]:
    """Remove the temporary files of our interrupted writes whose writer is this process or dead; no other file."""
    removed = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        match = OUR_TEMPORARY_FILE.fullmatch(path.name)
        if match and path.is_file() and (int(match[2]) == os.getpid() or not process_is_alive(int(match[2]))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def is_pretraining_run(folder: Path) -> bool:
    """Whether a folder holds a run of usdrl pretrain: its run.json, as ``Pretrainer`` writes it."""
    try:
        info = json.loads((folder / "run.json").read_text())
    except (OSError, ValueError):  # absent, unreadable, not UTF-8 or not JSON
        return False
    return isinstance(info, dict) and {"data", "model", "pretrain"} <= set(info)


def check_run_folder(out_dir: str | Path, resume: bool | str | Path) -> None:
    """``out_dir`` must be absent or empty (a new run), or with ``resume`` a run of usdrl pretrain; anything else
    is refused with a TrainingError and left untouched (our stale temporary files count as nothing)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise TrainingError(f"--out {out_dir} is a file; choose a new folder for the run")
    entries = [path.name for path in (out_dir.iterdir() if out_dir.is_dir() else [])
               if not OUR_TEMPORARY_FILE.fullmatch(path.name)]
    if not entries:
        return
    if is_pretraining_run(out_dir):
        if resume:
            return
        raise TrainingError(f"--out {out_dir} holds a pretraining run already; resume it with --resume, or choose a "
                            f"new --out")
    shown = ", ".join(sorted(entries)[:5]) + (", ..." if len(entries) > 5 else "")
    raise TrainingError(f"--out {out_dir} is not empty and not a run of usdrl pretrain (it holds {shown}); nothing "
                        f"was changed: choose a new or empty folder")


def build_model(model: ModelSection, layout) -> SkeletonModel:
    """The model to pretrain: the model section's encoder for the layout, with projectors."""
    return SkeletonModel(model, layout=layout)


def warn_if_crops_never_happen(split: SkeletonSplit, minimum_crop: int) -> float:
    """The part of the clips shorter than the minimum temporal crop; a warning when it is most of them.

    The released crop length is clip(floor(n * s), minimum_crop, n): a clip of n <= minimum_crop frames is
    never cropped, so its views differ only spatially (measured on UTKinect, median 28 frames: the encoder
    then lost to a random one on kNN; ``augment.minimum_crop=8`` fixed it)."""
    uncropped = float(np.mean(np.asarray(split.num_frames) <= minimum_crop)) if len(split) else 0.0
    if uncropped > 0.5:
        warnings.warn(f"{100 * uncropped:.0f}% of the training clips of {split.root} have at most "
                      f"augment.minimum_crop={minimum_crop} frames, so they are never cropped in time; for short "
                      f"clips set it lower, e.g. --set augment.minimum_crop=8", stacklevel=3)
    return uncropped


class Pretrainer:
    """Holds the run: model, optimiser, scaler, data, and the directory with checkpoints and logs."""

    def __init__(self, data_root: str | Path, benchmark: str, out_dir: str | Path, model: ModelSection,
                 augment: AugmentSection, loss: LossSection, settings: PretrainSection, progress: bool = True) -> None:
        if settings.modality not in MODALITIES:
            raise ConfigError(f"unknown modality {settings.modality!r}; choose one of {', '.join(MODALITIES)}")
        self.distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        self.device = resolve_device(settings.device)
        self.autocast_dtype, needs_scaler = autocast_settings(self.device, settings.precision)
        if self.distributed and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.rank = dist.get_rank() if self.distributed else 0
        self.world_size = dist.get_world_size() if self.distributed else 1
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.split = load_split(data_root, benchmark, "train")
        if len(self.split) < settings.batch_size * self.world_size:  # before anything is built
            suggestion = max(2, len(self.split) // (4 * self.world_size))
            raise ConfigError(f"the {benchmark} training split of {data_root} has {len(self.split)} samples, fewer "
                              f"than one batch of {settings.batch_size * self.world_size}; lower --batch-size "
                              f"(pretrain.batch_size), e.g. --batch-size {suggestion}")
        self.out_dir = Path(out_dir)
        self.settings, self.loss, self.model_section = settings, loss, model
        self.augment = augment
        self.progress = progress and self.rank == 0
        if self.rank == 0:
            warn_if_crops_never_happen(self.split, augment.minimum_crop)
        seed_everything(settings.seed)  # the initial weights
        self.model = build_model(model, self.split.layout).to(self.device)
        objective: nn.Module = PretrainingObjective(self.model)
        if self.distributed:  # the projectors' GlobalBatchNorm already spans all processes
            objective = nn.parallel.DistributedDataParallel(
                objective, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.objective = objective
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=settings.learning_rate,
                                          weight_decay=settings.weight_decay)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=needs_scaler)
        self.start_epoch = 0
        self.run_info = {
            "data": {"root": str(data_root), "benchmark": benchmark, "split": "train", "samples": len(self.split),
                     "manifest_fingerprint": self.split.manifest.get("input_fingerprint")},
            "model": asdict(model), "augment": asdict(augment), "loss": asdict(loss), "pretrain": asdict(settings),
            "world_size": self.world_size, "device": str(self.device),
            "precision": str(self.autocast_dtype or torch.float32),
        }

    # -- checkpoints ------------------------------------------------------------------------------
    def checkpoint_path(self, epoch: int) -> Path:
        return self.out_dir / "checkpoints" / f"checkpoint_{epoch:04d}.pt"

    @property
    def last_path(self) -> Path:
        return self.out_dir / "checkpoints" / "last.pt"

    def is_scheduled(self, epochs_done: int) -> bool:
        """Whether the schedule keeps a numbered checkpoint after this many epochs."""
        return epochs_done > 0 and (epochs_done % self.settings.checkpoint_every == 0
                                    or epochs_done == self.settings.epochs)

    def save(self, epochs_done: int) -> None:
        if self.rank != 0:
            return
        content = {
            "epoch": epochs_done, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(), "rng": _rng_states(), "encoder_config": self.model.encoder_record(),
            "layout": self.split.layout.to_dict(), "run": self.run_info,
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
        recorded = recorded_modality(content)
        if recorded and recorded != self.settings.modality:
            raise CheckpointError(f"{path} was pretrained on {recorded}, but this run is on {self.settings.modality}; "
                                  f"resume with --modality {recorded} or start a new --out")
        try:
            self.model.load_state_dict(content["model"])
            self.optimizer.load_state_dict(content["optimizer"])
            self.scaler.load_state_dict(content["scaler"])
            _restore_rng_states(content["rng"])
        except (RuntimeError, KeyError, ValueError, TypeError) as error:
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise CheckpointError(f"{path} does not fit this run: {message}") from None
        self.start_epoch = int(content["epoch"])
        numbered = self.checkpoint_path(self.start_epoch)
        if self.rank == 0 and self.is_scheduled(self.start_epoch) and not numbered.is_file():
            save_atomically(content, numbered)  # the run was stopped before it was written
        return True

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
        indices = epoch_batches(len(self.split), self.settings.batch_size, epoch, self.settings.seed, self.rank,
                                self.world_size)
        dataset = SplitDataset(self.split)
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=indices, collate_fn=collate_trimmed, num_workers=self.settings.workers,
            pin_memory=self.device.type == "cuda", persistent_workers=False)
        yield from loader

    def step(self, x: torch.Tensor, num_frames: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        x = x.to(self.device, non_blocking=True)
        views = make_views(x, num_frames.to(self.device), generator, self.augment,
                           self.model_section.clip_frames)  # (K, N, C, T, V, M)
        with autocast_context(self.device, self.autocast_dtype):
            projections = self.objective(views, self.settings.modality)
        terms = loss_terms(projections, self.loss)
        return terms

    def log(self, record: dict[str, Any]) -> None:
        if self.rank != 0:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_dir / "log.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def train(self) -> dict[str, Any]:
        settings = self.settings
        if self.rank == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomically(self.out_dir / "run.json", self.run_info)
            self.truncate_log()
        history = []
        for epoch in range(self.start_epoch, settings.epochs):
            epoch_seed = settings.seed * 1_000_003 + epoch * 1009 + self.rank
            torch.manual_seed(epoch_seed)  # drop path and anything else drawn from the global generator
            generator = torch.Generator(device=self.device).manual_seed(epoch_seed)
            rate = learning_rate_at(epoch, settings)
            for group in self.optimizer.param_groups:
                group["lr"] = rate
            self.objective.train()
            totals: dict[str, float] = {}
            steps, samples, started = 0, 0, time.perf_counter()
            bar = tqdm(self.batches(epoch), desc=f"epoch {epoch + 1}/{settings.epochs}", disable=not self.progress,
                       total=len(self.split) // (settings.batch_size * self.world_size), leave=False)
            for x, num_frames in bar:
                self.optimizer.zero_grad(set_to_none=True)
                terms = self.step(x, num_frames, generator)
                total = terms["total"]
                if not torch.isfinite(total):
                    kept = self.last_path if self.last_path.is_file() else "none yet"
                    raise TrainingError(f"non-finite loss ({total.item()}) at epoch {epoch + 1}, step {steps + 1}; "
                                        f"nothing was saved from this epoch; last good checkpoint: {kept}. "
                                        f"Lower the learning rate or use --precision fp32, then --resume")
                self.scaler.scale(total).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
                steps += 1
                samples += x.shape[0] * self.world_size
                for name, value in terms.items():
                    totals[name] = totals.get(name, 0.0) + float(value.detach())
                bar.set_postfix(loss=f"{totals['total'] / steps:.3f}")
                if settings.log_every and steps % settings.log_every == 0:
                    self.log({"epoch": epoch + 1, "step": steps, "lr": rate, "loss": float(total.detach())})
            if steps == 0:
                raise TrainingError("no full batch in an epoch; lower --batch-size")
            elapsed = time.perf_counter() - started
            record = {"epoch": epoch + 1, "lr": rate, **{name: value / steps for name, value in totals.items()},
                      "samples_per_second": samples / elapsed, "seconds": elapsed,
                      "peak_memory_mb": peak_memory_megabytes(self.device)}
            self.log(record)
            history.append(record)
            self.save(epoch + 1)
        return {"out": str(self.out_dir), "epochs": settings.epochs, "resumed_from": self.start_epoch,
                "last_checkpoint": str(self.last_path), "history": history}

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def pretrain(data_root: str | Path, benchmark: str, out_dir: str | Path, model: ModelSection = ModelSection(),
             augment: AugmentSection = AugmentSection(), loss: LossSection = LossSection(),
             settings: PretrainSection = PretrainSection(), resume: bool | str | Path = False,
             progress: bool = True) -> dict[str, Any]:
    """Pretrain on the ``train`` split of a prepared dataset; returns a summary with the epoch history.

    ``out_dir`` must be absent or empty, or with ``resume`` a run of usdrl pretrain to continue."""
    check_run_folder(out_dir, resume)
    trainer = Pretrainer(data_root, benchmark, out_dir, model, augment, loss, settings, progress)
    try:
        trainer.clean_interrupted_writes()
        if resume:
            trainer.resume(None if resume is True else resume)
        return trainer.train()
    finally:
        trainer.close()
