"""The SD 1.x / 2.x cross-attention U-Net against diffusers' UNet2DConditionModel (the test oracle)."""

from dataclasses import replace

import pytest
import torch
from diffusers import UNet2DConditionModel

from genpix.config import ConfigError
from genpix.io.checkpoint import load_module_weights
from genpix.models.sd_unet import SD1, SD2, SDUNet, SDUNetConfig, count_parameters

# diffusers' own tiny test U-Net (tests/pipelines/stable_diffusion), and an SD 2.x-style variant
TINY_SD1 = dict(block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, attention_head_dim=8,
                norm_num_groups=32)
TINY_SD2 = {**TINY_SD1, "use_linear_projection": True, "attention_head_dim": (2, 4), "upcast_attention": True,
            "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), "transformer_layers_per_block": 2}


@pytest.mark.parametrize("kwargs", [TINY_SD1, TINY_SD2], ids=["sd1-like", "sd2-like"])
@pytest.mark.parametrize("size", [(16, 16), (9, 13)])  # 9 x 13 takes diffusers' forward_upsample_size path
def test_same_weights_give_diffusers_outputs(kwargs, size):
    torch.manual_seed(0)
    ref = UNet2DConditionModel(**kwargs).eval()
    ours = SDUNet(SDUNetConfig.from_diffusers(dict(ref.config))).eval()
    load_module_weights(ours, ref.state_dict(), "diffusers UNet2DConditionModel")  # strict: no renaming
    g = torch.Generator().manual_seed(1)
    x, context = torch.randn(2, 4, *size, generator=g), torch.randn(2, 7, 32, generator=g)
    t = torch.tensor([3, 917])
    with torch.no_grad():
        expected = ref(x, t, context).sample
        torch.testing.assert_close(ours(x, t, context), expected, rtol=0, atol=1e-5)
        # a scalar (float) time is broadcast over the batch, as diffusers does
        torch.testing.assert_close(ours(x, 451.5, context), ref(x, 451.5, context).sample, rtol=0, atol=1e-5)
        # the text matters: another context gives another output
        assert (ours(x, t, torch.randn(2, 7, 32, generator=g)) - expected).abs().max() > 1e-3


def diffusers_meta(**kwargs) -> UNet2DConditionModel:
    with torch.device("meta"):
        return UNet2DConditionModel(**kwargs)


SD15_DIFFUSERS = dict(cross_attention_dim=768, attention_head_dim=8, sample_size=64)
SD21_DIFFUSERS = dict(cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True,
                      upcast_attention=True, sample_size=96)


def test_sd15_and_sd2_shapes_have_the_published_sizes_on_the_meta_device():
    assert count_parameters(SD1) == 859_520_964  # the SD 1.5 U-Net's 859.5M
    assert count_parameters(SD2) == 865_910_724  # SD 2.x: 64 channels per head, 1024-d context
    for ours, kwargs in [(SD1, SD15_DIFFUSERS), (replace(SD2, sample_size=96, upcast_attention=True), SD21_DIFFUSERS)]:
        ref = diffusers_meta(**kwargs)
        assert SDUNetConfig.from_diffusers(dict(ref.config)) == ours  # every key diffusers writes is understood
        with torch.device("meta"):
            mine = SDUNet(ours).state_dict()
        assert {k: v.shape for k, v in ref.state_dict().items()} == {k: v.shape for k, v in mine.items()}
    with torch.device("meta"):
        unet = SDUNet(SD1)
        out = unet(torch.empty(2, 4, 64, 64), torch.tensor([999, 999]), torch.empty(2, 77, 768))
    assert out.shape == (2, 4, 64, 64)


@pytest.mark.parametrize("change, message", [
    ({"class_embed_type": "timestep"}, "class_embed_type='timestep' is not supported"),
    ({"addition_embed_type": "text"}, "addition_embed_type: 'text' is not one of 'text_time'"),
    ({"addition_embed_type": "text_time"}, "needs addition_time_embed_dim and projection_class_embeddings_input_dim"),
    ({"num_attention_heads": 8}, "num_attention_heads is not supported"),
    ({"layers_per_block": [2, 1]}, "layers_per_block must be the same at every level"),
    ({"mid_block_type": "UNetMidBlock2DSimpleCrossAttn"}, "mid_block_type"),
    ({"down_block_types": ["DownBlock2D", "AttnDownBlock2D"]}, "down_block_types"),
    ({"unet_magic": 1}, "unknown config key 'unet_magic'"),
    ({"attention_head_dim": 6}, r"num_attention_heads \(6, 6\) must divide"),
])
def test_unsupported_diffusers_options_are_named(change, message):
    config = {"_class_name": "UNet2DConditionModel", **TINY_SD1, **change}
    with pytest.raises(ConfigError, match=message):
        SDUNetConfig.from_diffusers(config)


def test_context_of_the_wrong_width_is_refused():
    unet = SDUNet(SDUNetConfig.from_diffusers(TINY_SD1))
    with pytest.raises(ValueError, match=r"context must be \(B, L, 32\)"):
        unet(torch.zeros(1, 4, 8, 8), torch.tensor([1]), torch.zeros(1, 77, 768))


def test_bfloat16_with_upcast_attention_stays_close_to_float32():
    torch.manual_seed(0)
    unet = SDUNet(SDUNetConfig.from_diffusers(TINY_SD2)).eval()  # upcast_attention=True, as SD 2.1
    g = torch.Generator().manual_seed(2)
    x, context, t = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 7, 32, generator=g), torch.tensor([700])
    with torch.no_grad():
        expected = unet(x, t, context)
        half = unet.to(torch.bfloat16)(x.bfloat16(), t, context.bfloat16())
    assert half.dtype == torch.bfloat16
    assert ((half.float() - expected).abs().max() / expected.abs().max()) < 0.05
