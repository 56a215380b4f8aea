"""`petmd train`: fit PET to energies and forces with O(3) augmentation; resumable at any point.

Reproducibility is by construction: the epoch's frame order comes from (seed, epoch) and each batch's rotations from
(seed, epoch, batch), so a run resumed from any checkpoint, mid-epoch included, takes exactly the steps an
uninterrupted run would have taken.

The Trainer is one loop whose parts (data, model, optimizer, moving average, checkpoints, signals, progress) share
its state; it stays in one module of ~550 lines, with the loss, the schedule and the error sums in objective.py.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
import yaml
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from . import __version__
from .atomic import atomic_output
from .batch import Frame, batches_by_atom_budget, collate, random_rotations
from .checkpoint import CheckpointState, _debug_kill, load_checkpoint, save_checkpoint
from .config import Config
from .data import default_data_path, element_symbol, load_frames, split_indices
from .distributed import SINGLE_PROCESS, GradientSync, World, check_same_config, share, sum_over_processes
from .distributed import start as start_distributed
from .errors import PetmdError
from .model import PET
from .model.composition import fit_composition_energies
from .model.training_gradient import loss_and_gradient
from .objective import EV_PER_A3_IN_GPA, error_sums, learning_rate, rotational_variance, training_loss
from .precision import torch_dtype

METRIC_FIELDS = [
    "epoch",
    "step",
    "lr",
    "train_loss",
    "train_energy_rmse_mev_per_atom",
    "train_force_rmse_mev_per_A",
    "val_energy_mae_mev_per_atom",
    "val_energy_rmse_mev_per_atom",
    "val_force_mae_mev_per_A",
    "val_force_rmse_mev_per_A",
    "val_stress_mae_gpa",
    "val_stress_rmse_gpa",
    "wall_s",
]


# Chunk sizes of the training gradient when training.chunk_atoms is -1: on a CPU the largest chunk that trains as
# fast as the plain double backward, in a fraction of its memory; on a GPU large chunks keep it busy
# (the measurements: docs/benchmarks.md).
TRAINING_CHUNK_ATOMS_CPU = 512
TRAINING_CHUNK_ATOMS_GPU = 4096


def predict(model, frames: List[Frame], device: torch.device):
    """Energies and forces of ``frames``, and the virial where some of them have a stress label."""
    batch = collate(frames).to(device)
    return batch, model(**batch.model_inputs(), compute_forces=True, compute_virial=batch.has_virial is not None)


# what a resume may change: the data's location and how the run is executed (another machine, a GPU), not what
# it computes
RELOCATABLE_KEYS = {
    ("data", "path"),
    ("training", "device"),
    ("training", "num_threads"),
    ("training", "chunk_atoms"),
    ("training", "tf32"),
    ("training", "checkpoint_every_s"),
    ("training", "validation_atoms_per_batch"),
}


class Trainer:
    def __init__(
        self,
        cfg: Config,
        output_dir: Path,
        resume: bool = False,
        progress: bool = True,
        init: Optional[Path] = None,
        world: World = SINGLE_PROCESS,
    ):
        self.cfg = cfg
        self.out = Path(output_dir)
        self.world = world
        self.progress = progress and world.is_main
        t = cfg.training
        if t.num_threads:
            torch.set_num_threads(t.num_threads)
        self.dtype = torch_dtype(t.dtype)
        try:
            self.device = torch.device(t.device)
        except RuntimeError:
            raise PetmdError(f"training.device '{t.device}' is not a device (use cpu, cuda or cuda:N)") from None
        if self.device.type == "cuda" and (
            not torch.cuda.is_available() or (self.device.index or 0) >= torch.cuda.device_count()
        ):
            raise PetmdError(f"training.device '{t.device}': no such CUDA device on this machine")
        if t.tf32 and self.device.type != "cuda":
            raise PetmdError(
                f"training.tf32: true needs a CUDA device, but training.device is '{t.device}'; "
                "set tf32: false (TF32 exists only on CUDA)"
            )
        # per process, like the bridge's set_tf32: the run's own setting, whatever an earlier run here left
        torch.backends.cuda.matmul.allow_tf32 = t.tf32
        self.device = start_distributed(world, self.device)
        check_same_config(world, cfg.to_dict())
        last = self.out / "last.ckpt"
        state = None
        if resume and init is not None:
            raise PetmdError(
                "--init starts a new run from a checkpoint's weights and --resume continues a run; give one of them"
            )
        self.init_from = str(init) if init is not None else None
        initial = self._initial_weights(Path(init)) if init is not None else None
        if resume:
            if not last.exists():
                raise PetmdError(f"--resume: {last} does not exist (start without --resume)")
            state = load_checkpoint(last)
            self._check_resumable(state)
        elif last.exists():
            raise PetmdError(
                f"{self.out} already holds a training run (last.ckpt); use --resume to continue it "
                "or choose another --output directory"
            )
        self._load_data()
        self._build(state, initial)
        self._check_world_size()
        self.sync = GradientSync(self.model, world, self.device)

    # --- set-up -----------------------------------------------------------------------------------------------
    def _check_resumable(self, state: CheckpointState) -> None:
        """A resume continues the same run: only where it runs (RELOCATABLE_KEYS) may change, and config.yaml is
        rewritten with those changes alone."""
        for section in ("model", "data", "training"):
            saved = state["config"][section]
            for key, value in asdict(getattr(self.cfg, section)).items():
                if (section, key) in RELOCATABLE_KEYS or key not in saved or saved[key] == value:
                    continue
                raise PetmdError(
                    f"--resume: config key '{section}.{key}' is {value!r} but the run was started with "
                    f"{saved[key]!r}; a resume continues that run: restore it, or start a new run from this state "
                    f"with `--init {self.out / 'last.ckpt'}` and another --output"
                )

    def _initial_weights(self, path: Path) -> CheckpointState:
        """The weights, baseline and loss unit of a checkpoint (training or weights-only) to start a new run
        from: the model section must match; optimizer, schedule and epoch count start afresh."""
        state = load_checkpoint(path)
        saved = state["config"]["model"]
        for key, value in asdict(self.cfg.model).items():
            if saved[key] != value:
                raise PetmdError(
                    f"--init {path}: config key 'model.{key}' is {value!r} but the checkpoint's model "
                    f"has {saved[key]!r}; use the checkpoint's model section"
                )
        return state

    def _load_data(self) -> None:
        d = self.cfg.data
        if not d.path:
            d.path = str(default_data_path())
        frames = load_frames(
            d.path,
            self.cfg.model.cutoff,
            d.energy_key,
            d.forces_key,
            d.stride,
            d.max_frames,
            progress=self.progress,
            stress_key=d.stress_key,
            virial_key=d.virial_key,
        )
        if self.cfg.training.stress_weight > 0 and not any(f.virial is not None for f in frames):
            raise PetmdError(
                f"training.stress_weight is {self.cfg.training.stress_weight} but no frame of {d.path} has a stress "
                f"('{d.stress_key}') or virial ('{d.virial_key}') label: set data.stress_key or data.virial_key, "
                "or stress_weight: 0"
            )
        train_idx, val_idx = split_indices(len(frames), d.validation_fraction, d.split_seed, d.validation_indices)
        if len(val_idx) == 0:
            raise PetmdError(
                f"data: no validation frames (validation_fraction {d.validation_fraction} of {len(frames)} frames): "
                "petmd picks best.ckpt and reports its errors on them; set data.validation_fraction (e.g. 0.1) or "
                "data.validation_indices"
            )
        largest = max(frames[i].n_atoms for i in train_idx)
        if largest > self.cfg.training.atoms_per_batch:
            print(
                f"petmd train: note: training.atoms_per_batch {self.cfg.training.atoms_per_batch} is below the "
                f"{largest} atoms of the largest training frame: such frames make a batch of their own",
                file=sys.stderr,
            )
        self.frames = frames
        self.train_idx, self.val_idx = train_idx, val_idx
        self.atomic_numbers = sorted({int(z) for f in frames for z in f.numbers})
        trained = {int(z) for i in train_idx for z in frames[i].numbers}
        for i in val_idx:
            unseen = sorted(set(int(z) for z in frames[i].numbers) - trained)
            if unseen:
                raise PetmdError(
                    f"data: validation frame {int(i) * d.stride} of {d.path} holds "
                    f"{' '.join(element_symbol(z) for z in unseen)}, which no training frame holds, so the model "
                    "cannot learn it (its composition energy would be 0): add training frames with it, or change "
                    "data.split_seed or data.validation_indices"
                )

    def _build(self, state: Optional[CheckpointState], initial: Optional[CheckpointState] = None) -> None:
        t = self.cfg.training
        torch.manual_seed(t.seed)
        self.model = PET(self.atomic_numbers, self.cfg.model).to(self.dtype)
        if initial is not None:
            if initial["atomic_numbers"] != self.atomic_numbers:
                raise PetmdError(
                    f"--init {self.init_from}: the checkpoint's species {initial['atomic_numbers']} "
                    f"differ from the data's {self.atomic_numbers}"
                )
            # the composition baseline and energy scale come with the weights (buffers): the network was fitted
            # against them, and σ_F keeps the loss in the same unit
            self.model.load_state_dict(initial["model_state"])
            self.model.to(self.dtype)
            self.sigma_e, self.sigma_f = initial["sigma_e"], initial["sigma_f"]
            # only a split of the same data file can leak validation frames; fine-tuning on other data is not
            # a leak, and absolute paths differ between machines, so the file is compared by name
            held_out = initial["validation_indices"]
            data_file = Path(self.cfg.data.path).name
            same_file = Path(initial["config"]["data"]["path"] or "").name == data_file
            if same_file and held_out is not None and sorted(held_out) != sorted(int(i) for i in self.val_idx):
                print(
                    f"petmd train: warning: --init {self.init_from} was trained on {data_file} "
                    "with another validation split; its weights may have seen this run's validation frames: "
                    "keep the checkpoint's data section (validation_fraction, split_seed, validation_indices)",
                    file=sys.stderr,
                )
        elif state is None:
            self._fit_baseline()
        params = self.model.parameters()
        opt_cls = torch.optim.AdamW if t.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = opt_cls(params, lr=t.learning_rate, weight_decay=t.weight_decay)
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.best = float("inf")
        self.history: List[dict] = []
        self.elapsed = 0.0
        if state is not None:
            if state["atomic_numbers"] != self.atomic_numbers:
                raise PetmdError("--resume: the data's species differ from the checkpoint's")
            # with averaging, model_state holds the averaged weights and the optimizer's own are kept beside them
            self.model.load_state_dict(state.get("training_model_state", state["model_state"]))
            self.optimizer.load_state_dict(state["optimizer_state"])
            self.sigma_e, self.sigma_f = state["sigma_e"], state["sigma_f"]
            self.epoch, self.step_in_epoch = state["epoch"], state["step_in_epoch"]
            self.global_step, self.best = state["global_step"], state["best_val_force_mae"]
            self.history, self.elapsed = state["history"], state["elapsed_s"]
            self.init_from = state["initialized_from"]
            torch.set_rng_state(state["torch_rng"])
        self.model.to(self.device)
        self.ema = None
        if t.ema_decay > 0:
            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(t.ema_decay))
            self.ema.module.requires_grad_(False)  # validation differentiates by positions only
            if state is not None and "training_model_state" in state:
                self.ema.module.load_state_dict(state["model_state"])
                self.ema.n_averaged.fill_(state["ema_updates"])
            elif state is not None:
                print(
                    "petmd train: note: the state holds one set of weights (no averaging yet, or packed for "
                    "travel without the optimizer's copy): training continues from them and the average starts "
                    "afresh",
                    file=sys.stderr,
                )
        self.chunk_atoms = t.chunk_atoms
        if self.chunk_atoms < 0:
            self.chunk_atoms = TRAINING_CHUNK_ATOMS_CPU if self.device.type == "cpu" else TRAINING_CHUNK_ATOMS_GPU
        self.steps_per_epoch = len(self._epoch_batches(0))
        self.total_steps = t.epochs * self.steps_per_epoch

    def _fit_baseline(self) -> None:
        """Composition energies by least squares; the energy scale and the loss unit σ_F (force RMS) from the
        training set. σ_E (residual energy spread per atom) is recorded for reference."""
        train = [self.frames[i] for i in self.train_idx]
        species = self.atomic_numbers
        counts = np.array([[np.sum(f.numbers == z) for z in species] for f in train], dtype=np.float64)
        energies = np.array([f.energy for f in train])
        e_species = fit_composition_energies(counts, energies)
        residual_per_atom = (energies - counts @ e_species) / counts.sum(1)
        force_rms = float(np.sqrt(np.mean(np.concatenate([f.forces.ravel() for f in train]) ** 2)))
        self.sigma_e = float(max(residual_per_atom.std(), 1e-6))
        self.sigma_f = float(max(force_rms, 1e-6))
        with torch.no_grad():
            self.model.composition_energies.copy_(torch.from_numpy(e_species))
            # network outputs O(1): one unit of atomic energy ~ force RMS × 1 Å
            self.model.energy_scale.fill_(self.sigma_f)

    def _check_world_size(self) -> None:
        """Each process needs frames of its own in a batch: refuse more processes than a batch has frames."""
        most = max(len(group) for group in self._epoch_batches(0))
        if self.world.size > most:
            t = self.cfg.training
            copies = f" (with variance_copies {t.variance_copies})" if t.variance_copies > 1 else ""
            raise PetmdError(
                f"{self.world.size} training processes, but training.atoms_per_batch {t.atoms_per_batch}{copies} "
                f"puts at most {most} frames of this data in a batch, so some processes would have nothing to do: "
                f"start at most {most} processes, or raise atoms_per_batch (the global batch, shared out among them)"
            )

    def _epoch_batches(self, epoch: int) -> List[List[int]]:
        rng = np.random.default_rng([self.cfg.training.seed, epoch])
        order = self.train_idx[rng.permutation(len(self.train_idx))]
        t = self.cfg.training
        return batches_by_atom_budget(self.frames, order.tolist(), max(1, t.atoms_per_batch // t.variance_copies))

    def _rotations(self, epoch: int, step: int, n: int) -> Optional[np.ndarray]:
        t = self.cfg.training
        if not t.augment_rotations and not t.augment_inversion:
            return None
        rng = np.random.default_rng([t.seed, epoch, step, 1])
        if t.augment_rotations:
            return random_rotations(n, rng, inversion=t.augment_inversion)
        signs = np.where(rng.random(n) < 0.5, -1.0, 1.0)
        return signs[:, None, None] * np.eye(3)[None]

    # --- state ------------------------------------------------------------------------------------------------
    @property
    def averaged_model(self):
        """The weights that are validated, exported and shipped."""
        return self.ema.module if self.ema is not None else self.model

    def _state(self) -> dict:
        state = {
            "petmd_version": __version__,
            "config": self.cfg.to_dict(),
            "atomic_numbers": self.atomic_numbers,
            "model_state": self.averaged_model.state_dict(),
            "optimizer_state": self.optimizer.state_dict(),
            "sigma_e": self.sigma_e,
            "sigma_f": self.sigma_f,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "best_val_force_mae": self.best,
            "history": self.history,
            "elapsed_s": self.elapsed,
            "torch_rng": torch.get_rng_state(),
            "validation_indices": [int(i) for i in self.val_idx],
            "initialized_from": self.init_from,
        }
        if self.ema is not None:
            state["training_model_state"] = self.model.state_dict()
            state["ema_updates"] = int(self.ema.n_averaged)
        return state

    def _write_side_files(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        with atomic_output(self.out / "config.yaml", "w") as fh:
            yaml.safe_dump(self.cfg.to_dict(), fh, sort_keys=False)
        d = self.cfg.data
        split = {
            "data": d.path,
            "stride": d.stride,
            "max_frames": d.max_frames,
            "train": [int(i) * d.stride for i in self.train_idx],
            "validation": [int(i) * d.stride for i in self.val_idx],
        }
        (self.out / "split.json").write_text(json.dumps(split))

    def _write_metrics(self) -> None:
        with atomic_output(self.out / "metrics.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=METRIC_FIELDS)
            writer.writeheader()
            for row in self.history:
                writer.writerow(row)

    # --- the loop ---------------------------------------------------------------------------------------------
    def validate(self) -> Dict[str, float]:
        frames = [self.frames[i] for i in self.val_idx]
        groups = batches_by_atom_budget(frames, range(len(frames)), self.cfg.training.validation_atoms_per_batch)
        total = {"e_abs": 0.0, "e_sq": 0.0, "n_e": 0, "f_abs": 0.0, "f_sq": 0.0, "n_f": 0}
        total.update(s_abs=0.0, s_sq=0.0, n_s=0)
        for group in groups[self.world.rank :: self.world.size]:  # shared out among the processes
            batch, out = predict(self.averaged_model, [frames[i] for i in group], self.device)
            for k, v in error_sums(batch, out).items():
                total[k] += v
        total = sum_over_processes(total, self.world)
        n_e, n_f = max(total["n_e"], 1), max(total["n_f"], 1)
        metrics = {
            "val_energy_mae_mev_per_atom": 1e3 * total["e_abs"] / n_e,
            "val_energy_rmse_mev_per_atom": 1e3 * math.sqrt(total["e_sq"] / n_e),
            "val_force_mae_mev_per_A": 1e3 * total["f_abs"] / n_f,
            "val_force_rmse_mev_per_A": 1e3 * math.sqrt(total["f_sq"] / n_f),
        }
        if total["n_s"]:  # validation frames with stress labels
            metrics["val_stress_mae_gpa"] = EV_PER_A3_IN_GPA * total["s_abs"] / total["n_s"]
            metrics["val_stress_rmse_gpa"] = EV_PER_A3_IN_GPA * math.sqrt(total["s_sq"] / total["n_s"])
        return metrics

    def train_step(self, group: List[int], rotations) -> Dict[str, float]:
        """One optimizer step on the global batch ``group``: this process's share of its frames, the loss as sums
        normalised by the whole batch's counts, the gradient averaged over the processes by DDP."""
        t = self.cfg.training
        copies = t.variance_copies  # copy c of structure s is frame s·copies + c of the batch
        mine = share(group, [self.frames[i].n_atoms for i in group], self.world)
        counts = {
            "structures": len(group) * copies,
            "components": 3 * copies * sum(self.frames[i].n_atoms for i in group),
            "virial_components": 9 * copies * sum(self.frames[i].virial is not None for i in group),
        }
        self.optimizer.zero_grad(set_to_none=True)
        sums = {"loss": 0.0, "e_sq": 0.0, "n_e": 0, "f_sq": 0.0, "n_f": 0, "atoms": 0}
        if mine:
            position = {frame: k for k, frame in enumerate(group)}
            local_rotations = None
            if rotations is not None:
                picked = [position[i] * copies + c for i in mine for c in range(copies)]
                local_rotations = rotations[picked]
            with self.sync.local():
                sums = self._local_gradient(mine, local_rotations, counts)
        self.sync.synchronize()
        if t.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return sums

    def _local_gradient(self, frames_of_mine: List[int], rotations, counts: Dict[str, int]) -> Dict[str, float]:
        """This process's part of the loss and its gradient, added to ``.grad``. The loss is this share's sum over
        the batch's counts, times the number of processes, because DDP averages the processes' gradients."""
        t = self.cfg.training
        copies = t.variance_copies
        frames = [self.frames[i] for i in frames_of_mine for _ in range(copies)]
        batch = collate(frames, rotations=rotations).to(self.device)
        scale = float(self.world.size)

        def loss_of(out: Dict[str, torch.Tensor]) -> torch.Tensor:
            loss, _, _ = training_loss(
                out,
                batch,
                self.sigma_f,
                t.energy_weight,
                t.force_weight,
                counts["structures"],
                counts["components"],
                stress_weight=t.stress_weight,
                n_virial_components=counts["virial_components"],
            )
            if t.variance_weight > 0:
                variance = rotational_variance(out, batch, rotations, copies, counts["structures"] // copies)
                loss = loss + t.variance_weight * variance / self.sigma_f**2
            return scale * loss

        with_stress = t.stress_weight > 0 and batch.has_virial is not None
        loss, out = loss_and_gradient(self.model, batch.model_inputs(), loss_of, self.chunk_atoms, with_stress)
        _, de, df = training_loss(out, batch, self.sigma_f, t.energy_weight, t.force_weight)
        return {
            "loss": float(loss.detach()) / scale,
            "e_sq": float((de.detach() ** 2).sum()),
            "n_e": de.numel(),
            "f_sq": float((df.detach() ** 2).sum()),
            "n_f": df.numel(),
            "atoms": int(batch.n_atoms.sum()),
        }

    def run(self, max_time: Optional[float] = None, max_steps: Optional[int] = None) -> dict:
        """``max_steps``: stop once the run (counting the steps before a resume) has taken that many optimizer
        steps — unlike ``max_time``, a stop that a rerun on another machine reproduces."""
        t = self.cfg.training
        if self.world.is_main:
            self._write_side_files()
        start = time.monotonic()
        elapsed_at_start = self.elapsed
        last_save = start
        stop_reason = "completed"
        stopping = {"signal": None}

        def on_signal(signum, _frame):
            stopping["signal"] = signum

        old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        kill_at = int(os.environ.get("PETMD_DEBUG_KILL_AT_STEP", "-1"))
        kill_rank = int(os.environ.get("PETMD_DEBUG_KILL_RANK", "0"))
        atoms_seen, train_time = 0, 0.0
        steady: List[float] = [
            0,
            0.0,
        ]  # atoms and seconds of this run's steps after its first (kernels compiled, memory pooled)
        recent: List[float] = [0, 0.0, 0]  # atoms, training seconds, batches since the last progress line: the rate now
        try:
            while self.epoch < t.epochs:
                groups = self._epoch_batches(self.epoch)
                sums = {"loss": 0.0, "e_sq": 0.0, "n_e": 0, "f_sq": 0.0, "n_f": 0, "n": 0}
                bar = tqdm(
                    total=len(groups),
                    initial=self.step_in_epoch,
                    desc=f"epoch {self.epoch + 1}/{t.epochs}",
                    unit="batch",
                    disable=not self.progress,
                    leave=False,
                )
                while self.step_in_epoch < len(groups):
                    if max_steps is not None and self.global_step >= max_steps:
                        stop_reason = "max-steps"
                        break
                    group = groups[self.step_in_epoch]
                    for g in self.optimizer.param_groups:
                        g["lr"] = learning_rate(self.cfg, self.global_step, self.total_steps)
                    t0 = time.monotonic()
                    r = self.train_step(
                        group, self._rotations(self.epoch, self.step_in_epoch, len(group) * t.variance_copies)
                    )
                    now = time.monotonic()
                    dt = now - t0
                    # every process stops at the same step: one process's signal or time limit stops them all
                    asked_to_stop = stopping["signal"] is not None or (max_time is not None and now - start >= max_time)
                    flags = {"stop": float(asked_to_stop), "signal": float(stopping["signal"] is not None)}
                    r = sum_over_processes(dict(r, **flags), self.world)
                    if atoms_seen:
                        steady = [steady[0] + r["atoms"], steady[1] + dt]
                    train_time += dt
                    atoms_seen += int(r["atoms"])
                    recent = [recent[0] + r["atoms"], recent[1] + dt, recent[2] + 1]
                    for k in ("e_sq", "n_e", "f_sq", "n_f"):
                        sums[k] += r[k]
                    sums["loss"] += r["loss"]
                    sums["n"] += 1
                    self.step_in_epoch += 1
                    self.global_step += 1
                    bar.update(1)
                    bar.set_postfix(loss=f"{r['loss']:.3g}")
                    if self.global_step == kill_at and self.world.rank == kill_rank:
                        _debug_kill()
                    self.elapsed = elapsed_at_start + (now - start)
                    if r["stop"] > 0:
                        stop_reason = "signal" if r["signal"] > 0 else "max-time"
                        break
                    if now - last_save >= t.checkpoint_every_s and self.step_in_epoch < len(groups):
                        if self.world.is_main:
                            save_checkpoint(self._state(), self.out / "last.ckpt")
                        last_save = now
                        if not self.progress and self.world.is_main:  # in place of the bar: a background log's line
                            print(
                                f"epoch {self.epoch + 1}/{t.epochs}: batch {self.step_in_epoch}/{len(groups)}, "
                                f"mean loss {sums['loss'] / sums['n']:.4g}, train F RMSE "
                                f"{1e3 * math.sqrt(sums['f_sq'] / max(sums['n_f'], 1)):.1f} meV/Å, "
                                f"{recent[0] / recent[1]:.1f} atoms/s over the last {recent[2]} batches; "
                                "checkpoint written",
                                file=sys.stderr,
                                flush=True,
                            )
                            recent = [0, 0.0, 0]
                bar.close()
                if stop_reason != "completed":
                    break
                self._end_epoch(sums)
                last_save = time.monotonic()
        finally:
            for s, h in old_handlers.items():
                signal.signal(s, h)
        self.elapsed = elapsed_at_start + (time.monotonic() - start)
        if self.world.is_main:
            save_checkpoint(self._state(), self.out / "last.ckpt")
        result = {
            "stop_reason": stop_reason,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "best_val_force_mae_mev_per_A": self.best,
            "train_atoms_per_s": atoms_seen / train_time if train_time > 0 else float("nan"),
            "steady_train_atoms_per_s": steady[0] / steady[1] if steady[1] > 0 else float("nan"),
            "train_atoms_per_epoch": sum(self.frames[i].n_atoms for i in self.train_idx),
            "validation_atoms": sum(self.frames[i].n_atoms for i in self.val_idx),
            "history": self.history,
            "output_dir": str(self.out),
            "initialized_from": self.init_from,
            "ema_decay": t.ema_decay,
        }
        if self.device.type == "cuda":
            result["peak_device_memory_mib"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        return result

    def _end_epoch(self, sums: dict) -> None:
        val = self.validate() if len(self.val_idx) else {}
        row = {
            "epoch": self.epoch + 1,
            "step": self.global_step,
            "lr": learning_rate(self.cfg, max(self.global_step - 1, 0), self.total_steps),
            "train_loss": sums["loss"] / max(sums["n"], 1),
            "train_energy_rmse_mev_per_atom": 1e3 * math.sqrt(sums["e_sq"] / max(sums["n_e"], 1)),
            "train_force_rmse_mev_per_A": 1e3 * math.sqrt(sums["f_sq"] / max(sums["n_f"], 1)),
            **val,
            "wall_s": self.elapsed,
        }
        self.history.append(row)
        self.epoch += 1
        self.step_in_epoch = 0
        score = val.get("val_force_mae_mev_per_A", row["train_force_rmse_mev_per_A"])
        improved = score < self.best
        if improved:
            self.best = score
        # best.ckpt before last.ckpt: a kill between the two writes makes the resume redo this epoch and rewrite
        # the same best.ckpt, while the other order could record an improvement whose checkpoint was never written
        if not self.world.is_main:
            return
        state = self._state()
        if improved:
            save_checkpoint(state, self.out / "best.ckpt")
        save_checkpoint(state, self.out / "last.ckpt")
        self._write_metrics()
        line = (
            f"epoch {row['epoch']:4d}  loss {row['train_loss']:.4g}  "
            f"val E {val.get('val_energy_mae_mev_per_atom', float('nan')):.3f} meV/atom  "
            f"val F {val.get('val_force_mae_mev_per_A', float('nan')):.1f} meV/Å" + ("  *best" if improved else "")
        )
        if self.progress:
            tqdm.write(line)
        else:  # stdout keeps only the final summary (or its JSON)
            print(line, file=sys.stderr, flush=True)


def summary_table(result: dict) -> str:
    where = (
        f"in epoch {result['epoch'] + 1} after {result['step_in_epoch']} of its batches"
        if result["step_in_epoch"]
        else f"after epoch {result['epoch']}"
    )
    lines = [
        f"training stopped ({result['stop_reason']}) {where}, step {result['global_step']}; "
        f"output in {result['output_dir']}",
        f"training throughput this run: {result['train_atoms_per_s']:.1f} atoms/s "
        f"({result['steady_train_atoms_per_s']:.1f} after its first step)",
    ]
    if "peak_device_memory_mib" in result:
        lines.append(f"peak device memory: {result['peak_device_memory_mib']:,.0f} MiB")
    if result.get("initialized_from"):
        lines.insert(1, f"started from the weights of {result['initialized_from']} (--init)")
    if result.get("ema_decay"):
        lines.append(
            f"validated, checkpointed and exported: the moving average of the weights (decay {result['ema_decay']})"
        )
    history = result["history"]
    if history:
        stress = any("val_stress_mae_gpa" in row for row in history)  # validation frames with stress labels
        lines.append(
            f"{'epoch':>6} {'train F RMSE':>13} {'val E MAE':>10} {'val E RMSE':>11} {'val F MAE':>10} "
            f"{'val F RMSE':>11}"
            + (f" {'val S MAE':>10}   (meV/atom, meV/Å, GPa)" if stress else "   (meV/atom, meV/Å)")
        )
        shown = history if len(history) <= 10 else history[:3] + history[-7:]
        for row in shown:
            lines.append(
                f"{row['epoch']:>6} {row['train_force_rmse_mev_per_A']:>13.1f} "
                f"{row.get('val_energy_mae_mev_per_atom', float('nan')):>10.3f} "
                f"{row.get('val_energy_rmse_mev_per_atom', float('nan')):>11.3f} "
                f"{row.get('val_force_mae_mev_per_A', float('nan')):>10.1f} "
                f"{row.get('val_force_rmse_mev_per_A', float('nan')):>11.1f}"
                + (f" {row.get('val_stress_mae_gpa', float('nan')):>10.4f}" if stress else "")
            )
        lines.append(f"best validation force MAE: {result['best_val_force_mae_mev_per_A']:.1f} meV/Å (best.ckpt)")
    return "\n".join(lines)


def train_from_config(
    config_path, output_dir, resume=False, max_time=None, progress=True, init=None, max_steps=None, world=SINGLE_PROCESS
) -> dict:
    from .config import load_config

    cfg = load_config(config_path)
    trainer = Trainer(cfg, Path(output_dir), resume=resume, progress=progress, init=init, world=world)
    return trainer.run(max_time=max_time, max_steps=max_steps)
