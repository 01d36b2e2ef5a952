"""The text-conditioned latent U-Net of Stable Diffusion 1.x / 2.x (Rombach et al. 2022, sec. 3.3).

eps (or v) predictor over latents: x_t (B, 4, h, w), t (B,), context (B, L, D) -> (B, 4, h, w).
Levels of residual blocks, each followed at the chosen levels by a spatial transformer: GroupNorm,
a projection in, blocks of self-attention, cross-attention to the text tokens and a GEGLU
feed-forward (Shazeer 2020), a projection out, added back. Strided convolutions go down, nearest
upsampling plus a convolution goes up, with skip connections from every down state; the middle is
resnet, transformer, resnet. The time t is embedded sinusoidally ([cos, sin], frequency shift 0)
and passed through a two-layer MLP.

SD 1.x: :data:`SD1` (768-d CLIP context, 8 heads everywhere, attention at the 3 finest of 4
levels, 1x1-convolution projections). SD 2.x: :data:`SD2` (1024-d OpenCLIP context, 64 channels
per head, linear projections). SDXL (Podell et al. 2023, "SDXL: Improving Latent Diffusion Models
for High-Resolution Image Synthesis", sec. 2.1-2.2): :data:`SDXL_BASE` (3 levels, no attention at
the first, transformer depth 2 and 10 at the others and in the middle, 2048-d context of both
text encoders) and :data:`SDXL_REFINER` (4 levels of 384-1536 channels, depth 4, 1280-d context);
both add diffusers' ``addition_embed_type="text_time"``: the pooled text embedding and the
Fourier-embedded micro-conditioning ``time_ids`` (sizes, crop, aesthetic score; SGM's
``ConcatTimestepEmbedderND``) go through an MLP (``add_embedding``, SGM's ``label_emb``) that is
added to the time embedding. Parameter names are those of diffusers' ``UNet2DConditionModel``
(``down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k``, ...), so its state_dict loads
unchanged; :meth:`SDUNetConfig.from_diffusers` reads its config.json.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from genpix.config import ConfigError, check, from_dict
from genpix.models.ldm_blocks import Attention, DownBlock2D, UNetMidBlock2D, UpBlock2D, map_diffusers_config
from genpix.models.tome import merged
from genpix.models.unet import timestep_embedding

DownBlockType = Literal["CrossAttnDownBlock2D", "DownBlock2D"]
UpBlockType = Literal["CrossAttnUpBlock2D", "UpBlock2D"]
TRANSFORMER_EPS = 1e-6  # the GroupNorm before proj_in


@dataclass(frozen=True)
class SDUNetConfig:
    sample_size: int = 64  # latent H = W it was trained at (informational; other sizes run)
    in_channels: int = 4  # latent channels in (9 for inpainting models: latent, mask, masked latent)
    out_channels: int = 4  # latent channels out
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)  # channels per level
    down_block_types: tuple[DownBlockType, ...] = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
    up_block_types: tuple[UpBlockType, ...] = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3  # deepest first
    layers_per_block: int = 2  # resnets per level on the way down (one more on the way up)
    num_attention_heads: tuple[int, ...] = (8, 8, 8, 8)  # heads per level (diffusers: "attention_head_dim")
    cross_attention_dim: int = 768  # D of the context tokens
    # BasicTransformerBlocks per transformer: one for all, or one per level (the middle takes the
    # deepest level's, the way up the levels' in reverse; SDXL: (1, 2, 10))
    transformer_layers_per_block: int | tuple[int, ...] = 1
    use_linear_projection: bool = False  # proj_in / proj_out: Linear (SD 2.x) or 1x1 Conv2d (SD 1.x)
    upcast_attention: bool = False  # attention in float32 for half-precision inputs (SD 2.1)
    norm_num_groups: int = 32  # GroupNorm groups of the resnets and transformers
    norm_eps: float = 1e-5  # GroupNorm eps of the resnets and the output norm
    dropout: float = 0.0  # inside the resnets
    # SDXL's extra conditioning: None, or "text_time": text_embeds (B, P) and time_ids (B, n), each
    # id embedded in addition_time_embed_dim sinusoids; P + n * that = projection_class_embeddings_input_dim
    addition_embed_type: Literal["text_time"] | None = None
    addition_time_embed_dim: int | None = None  # 256 for SDXL
    projection_class_embeddings_input_dim: int | None = None  # 2816 (base: 1280 + 6 * 256), 2560 (refiner)

    def __post_init__(self) -> None:
        levels = len(self.block_out_channels)
        check(levels >= 1 and all(c >= 1 for c in self.block_out_channels),
              f"block_out_channels must be positive integers, got {self.block_out_channels}")
        for name in ("down_block_types", "up_block_types", "num_attention_heads"):
            check(len(getattr(self, name)) == levels,
                  f"{name} needs one entry per level ({levels}), got {getattr(self, name)}")
        check(self.in_channels >= 1 and self.out_channels >= 1, "in_channels and out_channels must be >= 1")
        check(self.layers_per_block >= 1, f"layers_per_block must be at least 1, got {self.layers_per_block}")
        depths = self.depths()
        check(len(depths) == levels and all(d >= 1 for d in depths),
              f"transformer_layers_per_block must be at least 1 (one value, or one per level), "
              f"got {self.transformer_layers_per_block}")
        if self.addition_embed_type is not None:
            check(all(n is not None and n >= 1 for n in (self.addition_time_embed_dim,
                                                         self.projection_class_embeddings_input_dim)),
                  "addition_embed_type 'text_time' needs addition_time_embed_dim and "
                  "projection_class_embeddings_input_dim")
        check(self.cross_attention_dim >= 1, f"cross_attention_dim must be >= 1, got {self.cross_attention_dim}")
        check(self.norm_num_groups >= 1 and all(c % self.norm_num_groups == 0 for c in self.block_out_channels),
              f"norm_num_groups {self.norm_num_groups} must divide every level's channels {self.block_out_channels}")
        for width, heads in zip(self.block_out_channels, self.num_attention_heads):
            check(heads >= 1 and width % heads == 0,
                  f"num_attention_heads {self.num_attention_heads} must divide the level's channels {width}")
        check(0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}")

    def depths(self) -> tuple[int, ...]:
        """Transformer depth per level, finest first."""
        depth = self.transformer_layers_per_block
        return (depth,) * len(self.block_out_channels) if isinstance(depth, int) else tuple(depth)

    @classmethod
    def from_diffusers(cls, config: dict[str, Any]) -> SDUNetConfig:
        """Map a diffusers ``UNet2DConditionModel`` config.json; options this layout lacks are errors."""
        config = dict(config)
        if config.pop("num_attention_heads", None) is not None:
            raise ConfigError("UNet2DConditionModel: num_attention_heads is not supported; diffusers itself "
                              "reads the head count from attention_head_dim")
        levels = len(config.get("block_out_channels", cls.block_out_channels))
        heads = config.pop("attention_head_dim", 8)  # diffusers' misnomer: it is the number of heads
        config["num_attention_heads"] = [heads] * levels if isinstance(heads, int) else heads
        if config.get("upcast_attention", False) is None:  # SDXL's config.json writes null
            config["upcast_attention"] = False
        for key in ("layers_per_block", "cross_attention_dim"):
            value = config.get(key)
            if isinstance(value, (list, tuple)):
                check(len(set(value)) == 1, f"UNet2DConditionModel: {key} must be the same at every level, got {value}")
                config[key] = value[0]
        mapped = map_diffusers_config(config, cls, DIFFUSERS_FIXED, "UNet2DConditionModel")
        return from_dict(cls, mapped, where="UNet2DConditionModel")


def _never(value: Any) -> bool:
    return value is False or (isinstance(value, (list, tuple)) and not any(value))


# diffusers UNet2DConditionModel options that the SD layout does not vary: key -> accepted value (or test)
DIFFUSERS_FIXED: dict[str, Any] = {
    "center_input_sample": False, "flip_sin_to_cos": True, "freq_shift": 0,
    "mid_block_type": "UNetMidBlock2DCrossAttn", "only_cross_attention": _never, "downsample_padding": 1,
    "mid_block_scale_factor": 1, "act_fn": "silu", "encoder_hid_dim": None, "encoder_hid_dim_type": None,
    "dual_cross_attention": False, "class_embed_type": None, "num_class_embeds": None,
    "resnet_time_scale_shift": "default",
    "resnet_skip_time_act": False, "resnet_out_scale_factor": 1.0, "time_embedding_type": "positional",
    "time_embedding_dim": None, "time_embedding_act_fn": None, "timestep_post_act": None,
    "time_cond_proj_dim": None, "conv_in_kernel": 3, "conv_out_kernel": 3,
    "attention_type": "default", "class_embeddings_concat": False,
    "mid_block_only_cross_attention": lambda value: value in (None, False), "cross_attention_norm": None,
    "addition_embed_type_num_heads": 64, "reverse_transformer_layers_per_block": None,
}


def heads_for(block_out_channels: tuple[int, ...], head_channels: int) -> tuple[int, ...]:
    """Heads per level for a fixed number of channels per head (LDM's ``num_head_channels``)."""
    return tuple(width // head_channels for width in block_out_channels)


SD1 = SDUNetConfig()  # stable-diffusion-v1-5: 859.5M parameters
SD2 = replace(SD1, num_attention_heads=heads_for(SD1.block_out_channels, 64), cross_attention_dim=1024,
              use_linear_projection=True)  # stable-diffusion-2(-base); 2.1 768-v adds sample_size 96, upcast
# SGM configs/inference/sd_xl_base.yaml and sd_xl_refiner.yaml, as diffusers converts them
SDXL_BASE = SDUNetConfig(
    sample_size=128, block_out_channels=(320, 640, 1280), num_attention_heads=(5, 10, 20),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=2048,
    transformer_layers_per_block=(1, 2, 10), use_linear_projection=True, addition_embed_type="text_time",
    addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816)  # 2.567B parameters
SDXL_REFINER = replace(
    SDXL_BASE, block_out_channels=(384, 768, 1536, 1536), num_attention_heads=(6, 12, 24, 24),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=1280,
    transformer_layers_per_block=4, projection_class_embeddings_input_dim=2560)


class GEGLU(nn.Module):
    """x W -> [a, g]; a * GELU(g) (Shazeer 2020, "GLU variants improve Transformer")."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, 2 * dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, gate = self.proj(x).chunk(2, dim=-1)
        return a * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU to 4 * dim, dropout, linear back to dim (``net.0.proj``, ``net.2``)."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, mult * dim), nn.Dropout(0.0), nn.Linear(mult * dim, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class BasicTransformerBlock(nn.Module):
    """Pre-norm self-attention, cross-attention to the context, feed-forward, each residual."""

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int, upcast: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, dim_head, upcast=upcast)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, heads, dim_head, context_dim=context_dim, upcast=upcast)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        attend = merged(self.attn1, x)  # self.attn1, or ToMe around it when a request turns it on (models/tome.py)
        x = x + attend(self.norm1(x))  # (B, HW, dim)
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class Transformer2DModel(nn.Module):
    """The spatial transformer: h + proj_out(blocks(proj_in(norm(h)))) over the H*W positions."""

    def __init__(self, channels: int, heads: int, context_dim: int, groups: int, num_layers: int = 1,
                 linear: bool = False, upcast: bool = False) -> None:
        super().__init__()
        dim_head = channels // heads
        self.linear = linear
        self.norm = nn.GroupNorm(groups, channels, eps=TRANSFORMER_EPS)
        proj = nn.Linear if linear else partial(nn.Conv2d, kernel_size=1)
        self.proj_in = proj(channels, channels)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(channels, heads, dim_head, context_dim, upcast) for _ in range(num_layers))
        self.proj_out = proj(channels, channels)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, c, height, width = x.shape
        h = self.norm(x)
        if not self.linear:
            h = self.proj_in(h)
        h = h.permute(0, 2, 3, 1).reshape(b, height * width, c)  # (B, HW, C)
        if self.linear:
            h = self.proj_in(h)
        for block in self.transformer_blocks:
            h = block(h, context)
        if self.linear:
            h = self.proj_out(h)
        h = h.reshape(b, height, width, c).permute(0, 3, 1, 2)  # (B, C, H, W)
        if not self.linear:
            h = self.proj_out(h.contiguous())
        return x + h


class TimestepEmbedding(nn.Module):
    """The MLP on the sinusoidal time features: linear_2(silu(linear_1(t_emb)))."""

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, t_emb: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(t_emb)))


class SDUNet(nn.Module):
    """eps / v predictor: x_t (B, C_in, h, w), t (B,) or scalar, context (B, L, D) -> (B, C_out, h, w)."""

    def __init__(self, config: SDUNetConfig) -> None:
        super().__init__()
        self.config = cfg = config
        widths, levels = cfg.block_out_channels, len(cfg.block_out_channels)
        temb = 4 * widths[0]
        groups, eps = cfg.norm_num_groups, cfg.norm_eps
        self.conv_in = nn.Conv2d(cfg.in_channels, widths[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(widths[0], temb)

        if cfg.addition_embed_type == "text_time":
            self.add_embedding = TimestepEmbedding(cfg.projection_class_embeddings_input_dim, temb)
        depths = cfg.depths()

        def transformer(heads: int, depth: int) -> partial:
            return partial(Transformer2DModel, heads=heads, context_dim=cfg.cross_attention_dim, groups=groups,
                           num_layers=depth, linear=cfg.use_linear_projection, upcast=cfg.upcast_attention)

        self.down_blocks = nn.ModuleList(
            DownBlock2D(widths[max(i - 1, 0)], widths[i], temb, cfg.layers_per_block, groups, eps,
                        add_downsample=i < levels - 1, dropout=cfg.dropout,
                        attention=(transformer(cfg.num_attention_heads[i], depths[i])
                                   if kind.startswith("CrossAttn") else None))
            for i, kind in enumerate(cfg.down_block_types))
        self.mid_block = UNetMidBlock2D(widths[-1], temb, groups, eps,
                                        transformer(cfg.num_attention_heads[-1], depths[-1]), dropout=cfg.dropout)
        rev_widths, rev_heads, rev_depths = widths[::-1], cfg.num_attention_heads[::-1], depths[::-1]
        layers = cfg.layers_per_block + 1
        up_blocks = []
        for i, kind in enumerate(cfg.up_block_types):
            prev, out, skip_last = rev_widths[max(i - 1, 0)], rev_widths[i], rev_widths[min(i + 1, levels - 1)]
            # resnet j sees the previous output and the skip popped for it
            ins = [(prev if j == 0 else out) + (skip_last if j == layers - 1 else out) for j in range(layers)]
            up_blocks.append(UpBlock2D(ins, out, temb, groups, eps, add_upsample=i < levels - 1,
                                       attention=(transformer(rev_heads[i], rev_depths[i])
                                                  if kind.startswith("CrossAttn") else None),
                                       dropout=cfg.dropout))
        self.up_blocks = nn.ModuleList(up_blocks)
        self.conv_norm_out = nn.GroupNorm(groups, widths[0], eps=eps)
        self.conv_out = nn.Conv2d(widths[0], cfg.out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor | float, context: torch.Tensor, *,
                text_embeds: torch.Tensor | None = None, time_ids: torch.Tensor | None = None) -> torch.Tensor:
        """``text_embeds`` (B, P) and ``time_ids`` (B, n): the "text_time" conditioning (SDXL only)."""
        temb = self.embed(x, t, context, text_embeds, time_ids)
        h, skips = self.encode(x, temb, context)
        return self.decode(self.mid_block(h, temb, context), skips, temb, context)

    def embed(self, x: torch.Tensor, t: torch.Tensor | float, context: torch.Tensor,
              text_embeds: torch.Tensor | None = None, time_ids: torch.Tensor | None = None) -> torch.Tensor:
        """The time embedding (B, 4 C_0), SDXL's added embedding included."""
        if context.ndim != 3 or context.shape[-1] != self.config.cross_attention_dim:
            raise ValueError(f"context must be (B, L, {self.config.cross_attention_dim}), got {tuple(context.shape)}")
        t = torch.as_tensor(t, device=x.device).reshape(-1).expand(x.shape[0])
        temb = self.time_embedding(timestep_embedding(t, self.config.block_out_channels[0]).to(x.dtype))
        if self.config.addition_embed_type == "text_time":
            temb = temb + self.add_embedding(self.added_embedding_input(text_embeds, time_ids).to(x.dtype))
        elif text_embeds is not None or time_ids is not None:
            raise ValueError("text_embeds and time_ids are for a U-Net with addition_embed_type 'text_time'")
        return temb

    def encode(self, x: torch.Tensor, temb: torch.Tensor, context: torch.Tensor,
               layers: int | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """conv_in and the down layers (each resnet with its transformer, each level's downsampler):
        (h, skips), conv_in's output and one skip per layer. ``layers``: only the first ``layers``
        down layers (DeepCache's shallow path, models/deepcache.py)."""
        h = self.conv_in(x)
        skips = [h]
        for block in self.down_blocks:
            if layers is not None and len(skips) > layers:
                break
            h, states = block(h, temb, context, None if layers is None else layers + 1 - len(skips))
            skips += states
        return h, skips

    def decode(self, h: torch.Tensor, skips: list[torch.Tensor], temb: torch.Tensor, context: torch.Tensor,
               start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Up layers [start:stop] on h, deepest first, each popping one of ``skips`` (a resnet with its
        transformer; a level's upsampler after its last); the output layers when run to the end.
        Layers count across levels, so DeepCache (models/deepcache.py) can cut between any two."""
        first = 0  # the layer number of this up block's first resnet
        for block in self.up_blocks:
            n = len(block.resnets)
            lo, hi = max(start - first, 0), n if stop is None else min(stop - first, n)
            first += n
            if lo < hi:
                size = skips[lo - hi - 1].shape[-2:] if len(skips) > hi - lo else None  # the next level's size
                h = block(h, skips, temb, context, size, start=lo, stop=hi)
        return h if stop is not None else self.conv_out(F.silu(self.conv_norm_out(h)))

    def added_embedding_input(self, text_embeds: torch.Tensor | None, time_ids: torch.Tensor | None) -> torch.Tensor:
        """[text_embeds, sinusoids of each time id] (B, projection_class_embeddings_input_dim): SDXL's
        vector conditioning c_vec (SGM ``ConcatTimestepEmbedderND``: [cos, sin] of 256 frequencies each)."""
        cfg = self.config
        if text_embeds is None or time_ids is None:
            raise ValueError("this U-Net (addition_embed_type 'text_time') needs text_embeds and time_ids")
        b = text_embeds.shape[0]
        time_embeds = timestep_embedding(time_ids.reshape(-1), cfg.addition_time_embed_dim).reshape(b, -1)
        joined = torch.cat([text_embeds.float(), time_embeds], dim=-1)
        if joined.shape[-1] != cfg.projection_class_embeddings_input_dim:
            raise ValueError(f"text_embeds {tuple(text_embeds.shape)} and time_ids {tuple(time_ids.shape)} give "
                             f"{joined.shape[-1]} features; the U-Net takes "
                             f"{cfg.projection_class_embeddings_input_dim}")
        return joined


def count_parameters(config: SDUNetConfig) -> int:
    """Parameters of an SD U-Net with ``config``, counted on the meta device (nothing allocated)."""
    with torch.device("meta"):
        return sum(p.numel() for p in SDUNet(config).parameters())

