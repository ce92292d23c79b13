"""The group trainer's own Adam step, against torch.optim.Adam."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from neural_em.fields import presets, siren
from neural_em.fields import trainer as trainer_module
from neural_em.fields.samples import RegionData, region_samples
from neural_em.fields.trainer import GroupTrainer


def _one_region() -> RegionData:
    rng = np.random.default_rng(3)
    data = rng.random((6, 5, 4)).astype(np.float32)
    return region_samples(data, [((0, 0, 0), (4, 5, 6))])


@pytest.mark.parametrize("softplus_beta", [None, 30.0])
def test_trainer_adam_equals_torch_adam_on_one_region(softplus_beta):
    """The trainer keeps the sine layers' weights folded (multiplied by ω0) and steps them
    with lr x ω0 and eps / ω0: exactly Adam on the standard (unfolded) weights. Written by hand
    because regions leave the batch one by one and their moments are compacted with them."""
    preset = dataclasses.replace(
        presets.PRESETS["paper"],
        hidden_width=16,
        hidden_layers=2,
        lr=1e-3,
        batch_points=None,
        softplus_beta=softplus_beta,
    )
    trainer = GroupTrainer(preset, _one_region(), seed=5)
    # float64 throughout, so that the comparison sees the algorithm, not float32 rounding
    trainer.x, trainer.y = trainer.x.double(), trainer.y.double()
    trainer.params = [p.double() for p in trainer.params]
    trainer.m = [t.double() for t in trainer.m]
    trainer.v = [t.double() for t in trainer.v]
    n = trainer.n_layers
    w0, b0 = siren.unfold_omega(trainer.params[:n], trainer.params[n:])
    standard = [t.clone().requires_grad_(True) for t in w0 + b0]
    optimiser = torch.optim.Adam(
        standard, lr=preset.lr, betas=trainer_module._ADAM_BETAS, eps=trainer_module._ADAM_EPS
    )
    mask = trainer.mask_full

    def loss_of(params: list[torch.Tensor]) -> torch.Tensor:
        """The trainer's full-batch training loss at ``params`` (folded)."""
        saved, trainer.params = trainer.params, params
        try:
            _, sq = trainer._train_errors(trainer.x, trainer.y)
        finally:
            trainer.params = saved
        return (torch.where(mask, sq, 0.0).sum(1) / trainer.counts).sum()

    for _ in range(6):
        # the trainer's step, as GroupTrainer.run takes it
        for t in trainer.params:
            t.requires_grad_(True)
        grads = torch.autograd.grad(loss_of(trainer.params), trainer.params)
        for t in trainer.params:
            t.requires_grad_(False)
        trainer._adam(grads, None)
        # torch.optim.Adam on the unfolded weights
        optimiser.zero_grad()
        w, b = siren.fold_omega(standard[:n], standard[n:])
        loss_of(w + b).backward()
        optimiser.step()
    w, b = siren.unfold_omega(trainer.params[:n], trainer.params[n:])
    moved = 0.0
    for ours, theirs, start in zip(w + b, standard, w0 + b0, strict=True):
        np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=1e-9, atol=1e-12)
        moved = max(moved, float((ours - start).abs().max()))
    assert moved > 3e-3  # six steps of lr 1e-3 moved the weights: the comparison is not empty
