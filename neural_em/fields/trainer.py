"""The batched group trainer of the neural map: the regions of one group trained as one batched
SIREN (:mod:`neural_em.fields.siren`) with a per-region loss, so every region gets exactly the
updates it would get alone (Adam is element-wise and the loss is a sum of per-region means).
Regions leave the batch as soon as they stop (converged, patience, epoch cap), so the remaining
ones train faster. The whole fit over groups and devices: :mod:`neural_em.fields.training`.

Determinism: the initial weights and the mini-batch order come from generators seeded by the
fit's seed and the group's index, so two CPU fits with the same arguments give identical
weights (unless a time budget cuts them at a different point).

Adam is written out (:meth:`GroupTrainer._adam`), not taken from ``torch.optim``: regions leave
the batch one by one, so the moments of those still training are compacted with their weights,
and sine layers (weights stored folded) take a step and epsilon scaled by ω0. On one region it
equals ``torch.optim.Adam`` on the unfolded weights (``tests/test_training.py``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from neural_em.errors import InputError
from neural_em.fields import siren
from neural_em.fields.checkpoint import (
    DEFAULT_CHECKPOINT_EVERY_S,
    GroupResult,
)
from neural_em.fields.presets import Preset
from neural_em.fields.records import RegionRecord, from_json_float, json_float
from neural_em.fields.samples import RegionData

logger = logging.getLogger(__name__)

_ADAM_BETAS = (0.9, 0.999)
_ADAM_EPS = 1e-8


# ---------------------------------------------------------------------- the trainer
class GroupTrainer:
    """Trains the regions of one group as one batched SIREN (see the module docstring).

    ``state`` (from :meth:`state_dict`) resumes a group exactly where a checkpoint left it.
    ``on_progress(n_done, epoch, mean_loss)`` is called after every evaluation.
    ``history`` collects ``(seconds, epoch, sample-weighted loss over the group, process CPU
    seconds)`` after every evaluation (the loss of stopped regions is their best).
    """

    def __init__(
        self,
        preset: Preset,
        samples: RegionData,
        *,
        seed: int,
        device: str = "cpu",
        state: dict[str, Any] | None = None,
        on_progress: Callable[[int, int, float], None] | None = None,
    ) -> None:
        self.preset = preset
        self.device = torch.device(device)
        self.on_progress = on_progress
        self.history: list[tuple[float, int, float]] = []
        dev = self.device
        self.x = samples.x.to(dev)
        self.y = samples.y.to(dev)
        self.counts = samples.counts.to(dev)
        self.n_regions = int(samples.x.shape[0])
        self.n_points = int(samples.x.shape[1])
        self.mask_full = torch.arange(self.n_points, device=dev).unsqueeze(
            0
        ) < self.counts.unsqueeze(1)
        self.n_layers = len(preset.widths) - 1
        self.batch = preset.batch_points
        if self.batch is not None and self.batch >= self.n_points:
            self.batch = None
        self.gen = torch.Generator(device=dev)
        if state is None:
            self._init_state(seed)
        else:
            self._load_state(state)

    # ------------------------------------------------------------------ state
    def _init_state(self, seed: int) -> None:
        preset, dev = self.preset, self.device
        init_gen = torch.Generator().manual_seed(int(seed))
        w, b = siren.init_siren(self.n_regions, preset.widths, generator=init_gen)
        if preset.first_omega0 != siren.OMEGA0:
            w[0] = w[0] * (preset.first_omega0 / siren.OMEGA0)
        if preset.bias_at_mean:
            ysum = torch.where(self.mask_full, self.y, 0.0).sum(1).cpu()
            b[-1][:, 0] = ysum / self.counts.cpu().clamp(min=1)
        w, b = siren.fold_omega(w, b)
        self.params = [t.to(dev) for t in w + b]
        self.m = [torch.zeros_like(t) for t in self.params]
        self.v = [torch.zeros_like(t) for t in self.params]
        self.best = [t.clone() for t in self.params]
        self.active = torch.arange(self.n_regions, device=dev)
        self.sample_weight = torch.ones(self.n_regions, self.n_points, device=dev)
        r = self.n_regions
        self.best_loss = np.full(r, np.inf)
        self.best_score = np.full(r, np.inf)
        self.best_max_error = np.full(r, np.inf)
        self.best_epoch = np.zeros(r, dtype=np.int64)
        self.epochs = np.zeros(r, dtype=np.int64)
        self.seconds = np.zeros(r)
        self.stop: list[str | None] = [None] * r
        self.epoch = 0
        self.step = 0
        self.elapsed_before = 0.0
        self.gen.manual_seed(int(seed) + 1)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: tensors (CPU) and a JSON-able record."""
        tensors: dict[str, torch.Tensor] = {}
        for k in range(len(self.params)):
            tensors[f"p{k}"] = self.params[k].detach().cpu()
            tensors[f"m{k}"] = self.m[k].cpu()
            tensors[f"v{k}"] = self.v[k].cpu()
            tensors[f"best{k}"] = self.best[k].cpu()
        tensors["active"] = self.active.cpu()
        tensors["sample_weight"] = self.sample_weight.cpu()
        tensors["gen_state"] = self.gen.get_state()
        record = {
            "best_loss": [json_float(v) for v in self.best_loss],
            "best_score": [json_float(v) for v in self.best_score],
            "best_max_error": [json_float(v) for v in self.best_max_error],
            "best_epoch": self.best_epoch.tolist(),
            "epochs": self.epochs.tolist(),
            "seconds": self.seconds.tolist(),
            "stop": list(self.stop),
            "epoch": self.epoch,
            "step": self.step,
            "elapsed": self.elapsed_before + self._elapsed(),
        }
        return {"tensors": tensors, "record": record}

    def _load_state(self, state: dict[str, Any]) -> None:
        t, rec, dev = state["tensors"], state["record"], self.device
        n = 2 * self.n_layers
        self.params = [t[f"p{k}"].to(dev).clone() for k in range(n)]
        self.m = [t[f"m{k}"].to(dev).clone() for k in range(n)]
        self.v = [t[f"v{k}"].to(dev).clone() for k in range(n)]
        self.best = [t[f"best{k}"].to(dev).clone() for k in range(n)]
        self.active = t["active"].to(dev).long()
        self.sample_weight = t["sample_weight"].to(dev).clone()
        self.gen.set_state(t["gen_state"].clone())
        self.best_loss = np.array([from_json_float(v) for v in rec["best_loss"]])
        self.best_score = np.array([from_json_float(v) for v in rec["best_score"]])
        self.best_max_error = np.array([from_json_float(v) for v in rec["best_max_error"]])
        self.best_epoch = np.array(rec["best_epoch"], dtype=np.int64)
        self.epochs = np.array(rec["epochs"], dtype=np.int64)
        self.seconds = np.array(rec["seconds"], dtype=np.float64)
        self.stop = list(rec["stop"])
        self.epoch = int(rec["epoch"])
        self.step = int(rec["step"])
        self.elapsed_before = float(rec["elapsed"])
        if self.params[0].shape[0] != len(self.active) or len(self.stop) != self.n_regions:
            raise InputError("checkpoint state does not match the group")

    def _elapsed(self) -> float:
        return time.perf_counter() - self._t0 if hasattr(self, "_t0") else 0.0

    # ------------------------------------------------------------------ training
    def _lr_factor(self) -> float:
        p = self.preset
        if p.schedule == "cosine":
            frac = min(1.0, self.epoch / max(1, p.max_epochs))
            return p.min_lr_fraction + (1 - p.min_lr_fraction) * 0.5 * (
                1 + math.cos(math.pi * frac)
            )
        return 1.0

    def _adam(self, grads: Sequence[torch.Tensor], keep: torch.Tensor | None) -> None:
        """One Adam step on the active regions (``keep``: the subset still training)."""
        self.step += 1
        b1, b2 = _ADAM_BETAS
        c1 = 1 - b1**self.step
        c2 = 1 - b2**self.step
        lr0 = self.preset.lr * self._lr_factor()
        n = self.n_layers
        with torch.no_grad():
            for k, (p, g) in enumerate(zip(self.params, grads, strict=True)):
                sine = (k % n) < n - 1  # weights then biases; the last layer is linear
                lr = lr0 * siren.OMEGA0 if sine else lr0
                eps = _ADAM_EPS / siren.OMEGA0 if sine else _ADAM_EPS
                if keep is not None:
                    g = g[keep]
                m, v = self.m[k], self.v[k]
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = (v / c2).sqrt_().add_(eps)
                p.addcdiv_(m, denom, value=-lr / c1)

    def _evaluate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per active region: loss (MSE) and max error (density units), at current weights."""
        act = self.active
        x, y, mask = self.x[act], self.y[act], self.mask_full[act]
        chunk = self.batch or self.n_points
        sq = torch.zeros(len(act), device=self.device)
        mx = torch.zeros(len(act), device=self.device)
        focus_scale = None
        p = self.preset
        if p.focus_error is not None and self.epoch >= p.focus_start * p.max_epochs:
            # Voxel weights 1 + (error / scale)^2 with scale = max(focus_error, 3 x the
            # region's RMS error at the last evaluation): mild while errors are large.
            rms = 0.5 * np.sqrt(self.best_loss[self.active.cpu().numpy()])
            focus_scale = (
                torch.from_numpy(np.maximum(p.focus_error, 3.0 * rms))
                .to(self.device, torch.float32)
                .unsqueeze(1)
            )
        with torch.no_grad():
            for s in range(0, self.n_points, chunk):
                out = self._predict(x[:, s : s + chunk])
                err = torch.where(mask[:, s : s + chunk], (out - y[:, s : s + chunk]).abs(), 0.0)
                sq += (err * err).sum(1)
                mx = torch.maximum(mx, err.amax(1))
                if focus_scale is not None:
                    focus = 1.0 + (0.5 * err / focus_scale) ** 2
                    self.sample_weight[act, s : s + chunk] = focus.clamp_(max=self.preset.focus_max)
        return sq / self.counts[act], 0.5 * mx

    def _record(
        self, loss: torch.Tensor, max_err: torch.Tensor, elapsed: float, budget_hit: bool
    ) -> torch.Tensor | None:
        """Update bests, decide stops; returns the mask of active regions that go on (or None
        when all go on)."""
        p = self.preset
        act = self.active.cpu().numpy()
        loss_np = loss.detach().cpu().double().numpy()
        err_np = max_err.detach().cpu().double().numpy()
        score = self._score(loss_np, err_np)
        improved = score < self.best_score[act]
        if improved.any():
            idx = torch.from_numpy(np.flatnonzero(improved)).to(self.device)
            for k in range(len(self.params)):
                self.best[k][self.active[idx]] = self.params[k].detach()[idx].clone()
            rows = act[improved]
            self.best_loss[rows] = loss_np[improved]
            self.best_score[rows] = score[improved]
            self.best_max_error[rows] = err_np[improved]
            self.best_epoch[rows] = self.epoch
        self.epochs[act] = self.epoch
        go_on = np.ones(len(act), dtype=bool)
        for i, r in enumerate(act):
            reason = None
            best = self.best_loss[r]
            if p.stop_loss is not None and best < p.stop_loss:
                reason = "converged"
            elif p.stop_max_error is not None and self.best_score[r] <= 1.0:
                reason = "converged"
            elif (
                p.patience_epochs is not None
                and self.best_score[r] < p.patience_below
                and self.epoch - self.best_epoch[r] >= p.patience_epochs
            ):
                reason = "patience"
            elif self.epoch >= p.max_epochs:
                reason = "epoch_cap"
            elif budget_hit:
                reason = "time_budget"
            if reason is not None:
                self.stop[r] = reason
                self.seconds[r] = elapsed
                go_on[i] = False
        self.history.append((elapsed, self.epoch, self._group_loss(), time.process_time()))
        if self.on_progress is not None:
            self.on_progress(
                int(sum(s is not None for s in self.stop)),
                self.epoch,
                float(np.mean(self.best_loss[np.isfinite(self.best_loss)]))
                if np.isfinite(self.best_loss).any()
                else float("nan"),
            )
        return None if go_on.all() else torch.from_numpy(go_on).to(self.device)

    def _score(self, loss: np.ndarray, max_error: np.ndarray) -> np.ndarray:
        """What "best" means: the loss, or for presets that stop on the error itself the
        worse of loss / stop_mse and (max error / stop_max_error)^2 (<= 1: converged)."""
        p = self.preset
        if p.stop_max_error is None:
            return loss
        return np.maximum(loss / (p.stop_mse or np.inf), (max_error / p.stop_max_error) ** 2)

    def _group_loss(self) -> float:
        counts = self.counts.cpu().numpy().astype(np.float64)
        ok = np.isfinite(self.best_loss)
        if not ok.any():
            return float("nan")
        return float((self.best_loss[ok] * counts[ok]).sum() / counts[ok].sum())

    def _compact(self, keep: torch.Tensor) -> None:
        self.active = self.active[keep]
        self.params = [p.detach()[keep].clone() for p in self.params]
        self.m = [t[keep].clone() for t in self.m]
        self.v = [t[keep].clone() for t in self.v]

    def run(
        self,
        checkpoint: Callable[[GroupTrainer], None] | None = None,
        checkpoint_every_s: float = DEFAULT_CHECKPOINT_EVERY_S,
    ) -> GroupResult:
        """Train until every region has stopped; returns the best weights and records."""
        p = self.preset
        self._t0 = time.perf_counter()
        last_ckpt = time.perf_counter()
        while len(self.active):
            elapsed = self.elapsed_before + self._elapsed()
            budget_hit = elapsed >= p.time_budget_s
            full = self.batch is None
            if full:
                # Full batch: the training forward pass is also the evaluation.
                for t in self.params:
                    t.requires_grad_(True)
                act = self.active
                mask = self.mask_full[act]
                err, sq = self._train_errors(self.x[act], self.y[act])
                err = torch.where(mask, err, 0.0)
                loss_r = (err * err).sum(1) / self.counts[act]
                keep = self._record(
                    loss_r.detach(), 0.5 * err.detach().abs().amax(1), elapsed, budget_hit
                )
                if keep is not None and not keep.any():
                    break
                train_loss = (torch.where(mask, sq, 0.0).sum(1) / self.counts[act]).sum()
                grads = torch.autograd.grad(train_loss, self.params)
                for t in self.params:
                    t.requires_grad_(False)
                if keep is not None:
                    self._compact(keep)
                self._adam(grads, keep)
            else:
                if self.epoch % p.eval_every == 0 or self.epoch >= p.max_epochs or budget_hit:
                    loss_r, max_err = self._evaluate()
                    keep = self._record(loss_r, max_err, elapsed, budget_hit)
                    if keep is not None:
                        if not keep.any():
                            break
                        self._compact(keep)
                self._train_epoch()
            self.epoch += 1
            if checkpoint is not None and time.perf_counter() - last_ckpt >= checkpoint_every_s:
                checkpoint(self)
                last_ckpt = time.perf_counter()
        return self.result()

    def _predict(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted targets ``(R, B)`` (density d as 2d - 1) at ``x`` ``(R, B, 3)``: the
        network outputs through the preset's output transform (:func:`siren.output_density`)."""
        return self._predict_raw(x)[0]

    def _predict_raw(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted targets and the raw network outputs, both ``(R, B)``."""
        n = self.n_layers
        out = siren.forward_folded(x, self.params[:n], self.params[n:])[..., 0]
        if self.preset.softplus_beta is None:
            return out, out
        return 2.0 * siren.output_density_torch(out, self.preset.softplus_beta) - 1.0, out

    def _train_errors(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Errors of the predicted targets and the squared training errors, both ``(R, B)``. With a softplus output, a voxel whose density
        needs a positive softplus argument (d > ln 2 / β) but whose argument is negative sits
        where the softplus is flat and would learn nothing ("dead"); it also pays the
        square of that argument, which is 0 at any solution, so the optimum is unchanged."""
        pred, out = self._predict_raw(x)
        err = pred - y
        sq = err * err
        beta = self.preset.softplus_beta
        if beta is not None:
            arg = 0.5 * (out + 1.0)
            dead = (0.5 * (y + 1.0) > math.log(2.0) / beta) & (arg < 0)
            sq = sq + torch.where(dead, 4.0 * arg * arg, 0.0)
        return err, sq

    def _train_epoch(self) -> None:
        act = self.active
        perm = torch.randperm(self.n_points, generator=self.gen, device=self.device)
        x = self.x[act][:, perm]
        y = self.y[act][:, perm]
        mask = self.mask_full[act][:, perm]
        weight = torch.where(mask, self.sample_weight[act][:, perm], 0.0)
        for s in range(0, self.n_points, self.batch):
            xb, yb, mb = (
                x[:, s : s + self.batch],
                y[:, s : s + self.batch],
                mask[:, s : s + self.batch],
            )
            wb = weight[:, s : s + self.batch]
            for t in self.params:
                t.requires_grad_(True)
            _, sq = self._train_errors(xb, yb)
            loss = ((wb * sq).sum(1) / mb.sum(1).clamp(min=1)).sum()
            grads = torch.autograd.grad(loss, self.params)
            for t in self.params:
                t.requires_grad_(False)
            self._adam(grads, None)

    def result(self) -> GroupResult:
        n = self.n_layers
        w, b = siren.unfold_omega(
            [t.detach().cpu() for t in self.best[:n]], [t.detach().cpu() for t in self.best[n:]]
        )
        records = []
        for r in range(self.n_regions):
            records.append(
                RegionRecord(
                    loss=json_float(self.best_loss[r]),
                    max_error=json_float(self.best_max_error[r]),
                    epochs=int(self.epochs[r]),
                    best_epoch=int(self.best_epoch[r]),
                    seconds=round(float(self.seconds[r]), 3),
                    stop=self.stop[r] or "epoch_cap",
                ).to_dict()
            )
        return GroupResult(
            [t.contiguous() for t in w], [t[..., :].contiguous() for t in b], records
        )
