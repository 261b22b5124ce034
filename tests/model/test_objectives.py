"""Tests of `model/objectives.py`: training objectives of the backbones, with Mask²DiT's clean
context scenes."""

from __future__ import annotations

import torch

from model import scene_diffusion_loss


def test_loss_ignores_clean_scenes():
    prediction = torch.randn(2, 6, 4, 8, 8, requires_grad=True)
    target = torch.randn(2, 6, 4, 8, 8)
    loss, per_scene = scene_diffusion_loss(prediction, target, [2, 3, 1], clean_scenes=[0, 2])
    (grad,) = torch.autograd.grad(loss, prediction)
    assert grad[:, :2].abs().sum() == 0 and grad[:, 5:].abs().sum() == 0 and grad[:, 2:5].abs().sum() > 0
    torch.testing.assert_close(loss, ((prediction - target)[:, 2:5] ** 2).mean())
    assert per_scene.shape == (2, 3)


def test_flow_matching_noises_as_wan_trains_and_an_expert_keeps_to_its_timesteps(tmp_path):
    from model.families import family_of
    from model.objectives import FlowMatching, shift_sigma
    from model.tiny import build_tiny_wan

    objective = FlowMatching(shift=5.0)
    latents = torch.randn(64, 6, 4, 2, 2)
    clean = torch.zeros(64, 2, dtype=torch.bool)
    clean[:, 0] = True
    inputs = objective.make_inputs(latents, [3, 3], clean, torch.Generator().manual_seed(0))
    sigma = (inputs.timesteps / 1000).view(-1, 1, 1, 1, 1)
    noise = inputs.target + latents
    assert torch.allclose(inputs.noisy[:, 3:], ((1 - sigma) * latents + sigma * noise)[:, 3:], atol=1e-5)
    assert torch.equal(inputs.noisy[:, :3], latents[:, :3])  # the clean context scene is not noised
    assert abs(float(shift_sigma(torch.tensor(0.5), 5.0)) - 5 / 6) < 1e-7
    assert float(inputs.timesteps.mean()) > 600  # shift 5 puts most draws at high noise, as Wan trains
    folder = build_tiny_wan(tmp_path / "a14b", layout="wan2.2-a14b")
    family = family_of(folder)
    high = family.objective(folder, expert="transformer").make_inputs(latents, [3, 3], clean, torch.Generator())
    low = family.objective(folder, expert="transformer_2").make_inputs(latents, [3, 3], clean, torch.Generator())
    assert float(high.timesteps.min()) >= 875 - 1e-3 and float(low.timesteps.max()) < 875
