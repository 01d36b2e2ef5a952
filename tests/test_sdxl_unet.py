"""The SD U-Net grown to the SDXL layout (Podell et al. 2023) against diffusers' UNet2DConditionModel.

Tiny random SDXL-shaped configs: the base (no attention at the first level, transformer depth per
level, linear projections, "text_time" additional embedding of the pooled text embedding and six
micro-conditioning ids), the refiner (4 levels, five ids with the aesthetic score) and a 9-channel
inpainting base. Same weights (diffusers' state_dict loads strictly, no renaming), same outputs.
"""

import pytest
import torch
from diffusers import UNet2DConditionModel

from genpix.io.checkpoint import load_module_weights
from genpix.models.sd_unet import SDXL_BASE, SDXL_REFINER, SDUNet, SDUNetConfig, count_parameters

# diffusers' tiny SDXL test U-Net (tests/pipelines/stable_diffusion_xl), with depth (1, 2) and 2 levels
TINY_XL = dict(block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
               down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
               up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
               use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
               transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=80,  # 32 + 6 * 8
               cross_attention_dim=64, norm_num_groups=16)
TINY_REFINER = {**TINY_XL, "block_out_channels": (16, 32, 48, 48), "attention_head_dim": (2, 4, 6, 6),
                "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                "transformer_layers_per_block": 2, "projection_class_embeddings_input_dim": 72,  # 32 + 5 * 8
                "cross_attention_dim": 32}
TINY_INPAINT = {**TINY_XL, "in_channels": 9}
CASES = {"base": (TINY_XL, 6), "refiner": (TINY_REFINER, 5), "inpaint": (TINY_INPAINT, 6)}


@pytest.mark.parametrize("kind", list(CASES))
def test_same_weights_give_diffusers_outputs(kind):
    kwargs, ids = CASES[kind]
    torch.manual_seed(0)
    ref = UNet2DConditionModel(**kwargs).eval()
    torch.nn.init.normal_(ref.conv_out.weight, std=0.05)
    ours = SDUNet(SDUNetConfig.from_diffusers(dict(ref.config))).eval()
    load_module_weights(ours, ref.state_dict(), "diffusers UNet2DConditionModel")  # strict: no renaming
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, kwargs["in_channels"], 9, 13, generator=g)  # non-square, odd: the upsample-size path
    context, pooled = torch.randn(2, 7, kwargs["cross_attention_dim"], generator=g), torch.randn(2, 32, generator=g)
    time_ids = torch.tensor([[1024.0, 768, 0, 16, 1024, 768, 2.5][:ids]] * 2)
    t = torch.tensor([3, 917])
    with torch.no_grad():
        expected = ref(x, t, context, added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample
        out = ours(x, t, context, text_embeds=pooled, time_ids=time_ids)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
        # the micro-conditioning matters: another target size gives another output
        other = ours(x, t, context, text_embeds=pooled, time_ids=time_ids + 64)
        assert (other - expected).abs().max() > 1e-4


def test_sdxl_shapes_have_diffusers_names_and_published_sizes_on_the_meta_device():
    """Full-size base and refiner: diffusers' converted SGM configs give the same config and keys."""
    base = dict(block_out_channels=(320, 640, 1280), attention_head_dim=(5, 10, 20), sample_size=128,
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=2048,
                transformer_layers_per_block=(1, 2, 10), use_linear_projection=True, addition_embed_type="text_time",
                addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816)
    refiner = {**base, "block_out_channels": (384, 768, 1536, 1536), "attention_head_dim": (6, 12, 24, 24),
               "down_block_types": SDXL_REFINER.down_block_types, "up_block_types": SDXL_REFINER.up_block_types,
               "cross_attention_dim": 1280, "transformer_layers_per_block": 4,
               "projection_class_embeddings_input_dim": 2560}
    for ours, kwargs in [(SDXL_BASE, base), (SDXL_REFINER, refiner)]:
        with torch.device("meta"):
            ref = UNet2DConditionModel(**kwargs)
            mine = SDUNet(ours).state_dict()
        config = {**ref.config, "upcast_attention": None}  # SDXL's published config.json writes null
        assert SDUNetConfig.from_diffusers(config) == ours
        assert {k: v.shape for k, v in ref.state_dict().items()} == {k: v.shape for k, v in mine.items()}
    assert count_parameters(SDXL_BASE) == 2_567_463_684  # SDXL 1.0 base: 2.6B
    assert count_parameters(SDXL_REFINER) == 2_259_526_660  # refiner: 2.3B (its 6.08 GB fp16 file with bigG and VAE)


def test_missing_or_misshapen_added_conditioning_is_refused():
    unet = SDUNet(SDUNetConfig.from_diffusers(TINY_XL)).eval()
    x, t, context = torch.zeros(1, 4, 8, 8), torch.tensor([1]), torch.zeros(1, 77, 64)
    with pytest.raises(ValueError, match="needs text_embeds and time_ids"):
        unet(x, t, context)
    with pytest.raises(ValueError, match="give 72 features; the U-Net takes 80"):
        unet(x, t, context, text_embeds=torch.zeros(1, 32), time_ids=torch.zeros(1, 5))
    sd = SDUNet(SDUNetConfig.from_diffusers({k: v for k, v in TINY_XL.items() if "addition" not in k
                                             and "projection_class" not in k}))
    with pytest.raises(ValueError, match="are for a U-Net with addition_embed_type 'text_time'"):
        sd(x, t, context, text_embeds=torch.zeros(1, 32), time_ids=torch.zeros(1, 6))
