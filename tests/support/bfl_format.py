"""diffusers -> Black Forest Labs key mapping: the inverse of diffusers' converter, to write BFL-format test files."""

from __future__ import annotations

from typing import Any


def swap_halves(t: Any) -> Any:
    import torch

    first, second = t.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def cat(*tensors: Any) -> Any:
    import torch

    return torch.cat(tensors, dim=0)


def double_block(sd: dict[str, Any], i: int) -> dict[str, Any]:
    d, b = f"transformer_blocks.{i}.", f"double_blocks.{i}."
    out = {}
    for kind in ("weight", "bias"):
        out[f"{b}img_mod.lin.{kind}"] = sd[f"{d}norm1.linear.{kind}"]
        out[f"{b}txt_mod.lin.{kind}"] = sd[f"{d}norm1_context.linear.{kind}"]
        out[f"{b}img_attn.qkv.{kind}"] = cat(*(sd[f"{d}attn.to_{x}.{kind}"] for x in "qkv"))
        out[f"{b}txt_attn.qkv.{kind}"] = cat(*(sd[f"{d}attn.add_{x}_proj.{kind}"] for x in "qkv"))
        out[f"{b}img_mlp.0.{kind}"] = sd[f"{d}ff.net.0.proj.{kind}"]
        out[f"{b}img_mlp.2.{kind}"] = sd[f"{d}ff.net.2.{kind}"]
        out[f"{b}txt_mlp.0.{kind}"] = sd[f"{d}ff_context.net.0.proj.{kind}"]
        out[f"{b}txt_mlp.2.{kind}"] = sd[f"{d}ff_context.net.2.{kind}"]
        out[f"{b}img_attn.proj.{kind}"] = sd[f"{d}attn.to_out.0.{kind}"]
        out[f"{b}txt_attn.proj.{kind}"] = sd[f"{d}attn.to_add_out.{kind}"]
    out[f"{b}img_attn.norm.query_norm.scale"] = sd[f"{d}attn.norm_q.weight"]
    out[f"{b}img_attn.norm.key_norm.scale"] = sd[f"{d}attn.norm_k.weight"]
    out[f"{b}txt_attn.norm.query_norm.scale"] = sd[f"{d}attn.norm_added_q.weight"]
    out[f"{b}txt_attn.norm.key_norm.scale"] = sd[f"{d}attn.norm_added_k.weight"]
    return out


def single_block(sd: dict[str, Any], i: int) -> dict[str, Any]:
    d, b = f"single_transformer_blocks.{i}.", f"single_blocks.{i}."
    out = {}
    for kind in ("weight", "bias"):
        out[f"{b}modulation.lin.{kind}"] = sd[f"{d}norm.linear.{kind}"]
        out[f"{b}linear1.{kind}"] = cat(*(sd[f"{d}attn.to_{x}.{kind}"] for x in "qkv"), sd[f"{d}proj_mlp.{kind}"])
        out[f"{b}linear2.{kind}"] = sd[f"{d}proj_out.{kind}"]
    out[f"{b}norm.query_norm.scale"] = sd[f"{d}attn.norm_q.weight"]
    out[f"{b}norm.key_norm.scale"] = sd[f"{d}attn.norm_k.weight"]
    return out


def to_bfl(sd: dict[str, Any], double: int, single: int) -> dict[str, Any]:
    out = {}
    for kind in ("weight", "bias"):
        out[f"time_in.in_layer.{kind}"] = sd[f"time_text_embed.timestep_embedder.linear_1.{kind}"]
        out[f"time_in.out_layer.{kind}"] = sd[f"time_text_embed.timestep_embedder.linear_2.{kind}"]
        out[f"vector_in.in_layer.{kind}"] = sd[f"time_text_embed.text_embedder.linear_1.{kind}"]
        out[f"vector_in.out_layer.{kind}"] = sd[f"time_text_embed.text_embedder.linear_2.{kind}"]
        out[f"txt_in.{kind}"] = sd[f"context_embedder.{kind}"]
        out[f"img_in.{kind}"] = sd[f"x_embedder.{kind}"]
        out[f"final_layer.linear.{kind}"] = sd[f"proj_out.{kind}"]
        out[f"final_layer.adaLN_modulation.1.{kind}"] = swap_halves(sd[f"norm_out.linear.{kind}"])
    for i in range(double):
        out.update(double_block(sd, i))
    for i in range(single):
        out.update(single_block(sd, i))
    return {k: v.contiguous() for k, v in out.items()}
