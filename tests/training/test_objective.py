"""Tests of `training/objective.py`: the conditional task of SFT: which samples keep their earlier
scenes as clean context."""

from __future__ import annotations

import pytest
import torch
from diffusers import CogVideoXDDIMScheduler

from model.objectives import FlowMatching, VPrediction
from training.objective import conditional_mask


@pytest.mark.parametrize("backbone", ["cogvideox", "wan"])
def test_conditional_task_ratio_and_loss_touch_only_target_scenes(backbone):
    masks = conditional_mask(list(range(4000)), 3, 0.5, seed=1)
    assert abs(masks[:, 0].float().mean().item() - 0.5) < 0.03
    assert (masks[:, 2] == 0).all() and (masks[:, 0] == masks[:, 1]).all()  # earlier scenes clean, last is the target
    if backbone == "cogvideox":
        objective = VPrediction(CogVideoXDDIMScheduler(prediction_type="v_prediction", rescale_betas_zero_snr=True))
    else:
        objective = FlowMatching(shift=5.0)
    latents = torch.randn(2, 6, 4, 4, 4, requires_grad=True)
    clean = torch.tensor([[True, True, False], [False, False, False]])
    inputs = objective.make_inputs(latents, [2, 2, 2], clean, torch.Generator().manual_seed(0))
    assert torch.equal(inputs.noisy[0, :4], latents[0, :4]) and not torch.equal(inputs.noisy[1, :4], latents[1, :4])
    output = torch.randn(2, 6, 4, 4, 4, requires_grad=True)
    loss, _ = objective.loss(output, inputs, [2, 2, 2])
    loss.backward()
    assert output.grad[0, :4].abs().sum() == 0 and output.grad[0, 4:].abs().sum() > 0 and output.grad[1].abs().sum() > 0


def test_the_loss_weighs_every_generated_frame_once():
    from model import scene_diffusion_loss

    prediction, target = torch.randn(2, 4, 3, 2, 2), torch.randn(2, 4, 3, 2, 2)
    loss, per_scene = scene_diffusion_loss(prediction, target, [1, 3])
    assert loss.item() == pytest.approx(((prediction - target) ** 2).mean().item(), rel=1e-6)
    loss, _ = scene_diffusion_loss(prediction, target, [1, 3], clean_scenes=[0])
    assert loss.item() == pytest.approx(((prediction[:, 1:] - target[:, 1:]) ** 2).mean().item(), rel=1e-6)
