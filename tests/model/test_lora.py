"""Tests of `model/lora.py`: LoRA on both backbones, exported so that stock diffusers pipelines
(`load_lora_weights`) and ComfyUI's Wan naming (through diffusers' own converter) give the same
weights and outputs as our merged model, and `load_lora` equals the merged folder."""

from __future__ import annotations

import pytest
import torch

from model.lora import (
    COMFYUI_FILE,
    DIFFUSERS_FILE,
    adapter_state,
    add_lora,
    layers,
    load_lora,
    merge_lora,
    read_lora,
    save_lora,
)

RANK, ALPHA = 4, 8.0


@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory):
    from model.tiny import build_tiny_model, build_tiny_wan

    root = tmp_path_factory.mktemp("lora")
    return {"wan": build_tiny_wan(root / "wan"), "cogvideox": build_tiny_model(root / "cogvideox")}


def _adapted(family_name, folder):
    from model.families import FAMILIES

    transformer = FAMILIES[family_name].load_transformer(folder / "transformer")
    add_lora(transformer, RANK, ALPHA, init="gaussian", family=family_name)
    with torch.no_grad():  # a trained adapter: B is no longer zero
        for name, param in transformer.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn_like(param) * 0.05)
    return transformer


def _inputs(family_name, config):
    torch.manual_seed(0)
    if family_name == "wan":
        return dict(hidden_states=torch.randn(1, config.in_channels, 3, 8, 8), timestep=torch.tensor([500]),
                    encoder_hidden_states=torch.randn(1, 16, config.text_dim))  # fmt: skip
    return dict(hidden_states=torch.randn(1, 3, config.in_channels, 8, 8), timestep=torch.tensor([500]),
                encoder_hidden_states=torch.randn(1, config.max_text_seq_length, config.text_embed_dim))  # fmt: skip


@pytest.mark.parametrize("family_name", ["wan", "cogvideox"])
def test_the_base_is_frozen_and_only_adapters_train(tiny_folders, family_name):
    transformer = _adapted(family_name, tiny_folders[family_name])
    trainable = {n for n, p in transformer.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert {m.rsplit(".", 1)[-1] for m in layers(adapter_state(transformer))} >= {"to_q", "to_k", "to_v", "0"}


@pytest.mark.parametrize("family_name", ["wan", "cogvideox"])
def test_stock_pipelines_load_the_diffusers_file_and_match_our_merged_model(tiny_folders, family_name, tmp_path):
    from diffusers import CogVideoXPipeline, WanPipeline

    from model.families import FAMILIES

    folder = tiny_folders[family_name]
    adapted = _adapted(family_name, folder)
    save_lora(adapted, tmp_path / "lora", RANK, ALPHA, family_name)
    stock = (WanPipeline if family_name == "wan" else CogVideoXPipeline).from_pretrained(folder)
    stock.load_lora_weights(str(tmp_path / "lora"))  # how their users load it
    ours = FAMILIES[family_name].load_transformer(folder / "transformer")
    ours.load_state_dict(merge_lora(ours.state_dict(), read_lora(tmp_path / "lora")))
    ours.save_pretrained(tmp_path / "merged")  # a merged folder loads with from_pretrained
    merged = type(ours).from_pretrained(tmp_path / "merged")
    inputs = _inputs(family_name, merged.config)
    with torch.no_grad():
        expected = merged(**inputs, return_dict=False)[0]
        got = stock.transformer(**inputs, return_dict=False)[0]
        unadapted = FAMILIES[family_name].load_transformer(folder / "transformer")(**inputs, return_dict=False)[0]
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(unadapted, expected, atol=1e-3)  # the adapter changes the output
    # generate --lora: merged into a live model, the same weights as the merged folder
    live = FAMILIES[family_name].load_transformer(folder / "transformer")
    assert load_lora(live, tmp_path / "lora") == len(layers(adapter_state(adapted)))
    assert all(torch.equal(a, b) for a, b in zip(live.state_dict().values(), merged.state_dict().values()))


def test_the_comfyui_file_round_trips_through_diffusers_converter(tiny_folders, tmp_path):
    from diffusers import WanPipeline

    adapted = _adapted("wan", tiny_folders["wan"])
    save_lora(adapted, tmp_path, RANK, ALPHA, "wan")
    ours = read_lora(tmp_path / DIFFUSERS_FILE)
    converted = WanPipeline.lora_state_dict(str(tmp_path / COMFYUI_FILE))  # ComfyUI naming -> diffusers'
    converted = converted[0] if isinstance(converted, tuple) else converted
    theirs = layers({k.removeprefix("transformer."): v for k, v in converted.items()})
    assert set(theirs) == set(ours)
    for module, (down, up) in ours.items():  # the same update B @ A (alpha folded in either way)
        assert torch.allclose(theirs[module][1] @ theirs[module][0], up @ down, atol=1e-6)
    assert read_lora(tmp_path / COMFYUI_FILE).keys() == ours.keys()  # and generate --lora reads it too
