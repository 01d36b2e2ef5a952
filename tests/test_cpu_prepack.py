"""Prepacked convolutions (models/cpu_prepack.py) give the plain convolution's results."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from genpix.models.cpu_prepack import PackedConv2d, can_prepack, prepack_convolutions

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs PyTorch built with oneDNN")


@pytest.mark.parametrize("kwargs", [dict(kernel_size=3, padding=1), dict(kernel_size=3, stride=2, padding=1),
                                    dict(kernel_size=1), dict(kernel_size=3, padding=2, dilation=2, bias=False),
                                    dict(kernel_size=3, padding=1, groups=4)])
def test_packed_conv_equals_conv_at_every_input_size(kwargs):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, **kwargs).eval()
    packed = PackedConv2d(conv)
    with torch.no_grad():
        for shape in [(2, 8, 16, 16), (1, 8, 9, 13), (3, 8, 32, 8)]:  # packed at the first, used at all
            x = torch.randn(shape)
            torch.testing.assert_close(packed(x), conv(x), rtol=1e-5, atol=1e-5)
        x = torch.randn(2, 8, 12, 12).contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(packed(x), conv(x), rtol=1e-5, atol=1e-5)
    assert packed.weight is None and packed.packed.is_mkldnn  # the plain weight is let go once packed
    assert "prepacked" in repr(packed)


def test_prepack_replaces_only_what_it_can():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(4, 8), nn.SiLU(),
                          nn.Sequential(nn.Conv2d(8, 8, 3, padding="same"),  # string padding: kept
                                        nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect"),  # kept
                                        nn.Conv2d(8, 8, 1)),
                          nn.Conv2d(8, 4, 3, padding=1).half()).eval()  # float16: kept
    x = torch.randn(2, 3, 10, 10)
    with torch.no_grad():
        want = model[:4](x)
        assert prepack_convolutions(model) == 2
        torch.testing.assert_close(model[:4](x), want, rtol=1e-5, atol=1e-5)
    kinds = [type(m).__name__ for m in model.modules() if "Conv" in type(m).__name__]
    assert kinds == ["PackedConv2d", "Conv2d", "Conv2d", "PackedConv2d", "Conv2d"]
    assert not can_prepack(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="cannot prepack"):
        PackedConv2d(nn.Conv2d(2, 2, 3, padding="same"))


def test_prepacked_sd_unet_matches_the_plain_one():
    from genpix.models.sd_unet import SDUNet, SDUNetConfig

    torch.manual_seed(0)
    config = SDUNetConfig(sample_size=8, block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32,
                          num_attention_heads=(2, 2), norm_num_groups=8,
                          down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                          up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    unet = SDUNet(config).eval().requires_grad_(False)
    x, t, context = torch.randn(2, 4, 8, 8), torch.tensor([10, 900]), torch.randn(2, 5, 32)
    with torch.inference_mode():
        want = unet(x, t, context)
        prepack_convolutions(unet)
        torch.testing.assert_close(unet(x, t, context), want, rtol=1e-5, atol=1e-5)
