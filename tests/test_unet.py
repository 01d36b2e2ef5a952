"""The diffusion U-Net: shapes, presets, class embedding and config errors."""

import pytest
import torch

from genpix.config import ConfigError
from genpix.models.unet import PRESETS, UNet, UNetConfig, count_parameters, preset_config

TINY = UNetConfig(image_size=8, channels=3, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                  attention_levels=(1,), head_channels=4, norm_groups=4, num_classes=3)


def test_output_shape_zero_init_and_time_dependence():
    torch.manual_seed(0)
    unet = UNet(TINY)
    x = torch.randn(2, 3, 8, 8)
    assert unet(x, torch.tensor([1.0, 900.0])).abs().max() == 0  # the last conv starts at zero
    torch.nn.init.normal_(unet.conv_out.weight)
    out = unet(x, torch.tensor([1.0, 900.0]), torch.tensor([0, 3]))
    assert out.shape == (2, 3, 8, 8)
    assert not torch.allclose(out[0], unet(x[:1], torch.tensor([2.0]), torch.tensor([0]))[0])  # t matters
    # no label means the null class (index num_classes), the unconditional branch of guidance
    torch.testing.assert_close(unet(x, torch.tensor(5.0)), unet(x, torch.tensor(5.0), torch.tensor([3, 3])))
    assert not torch.allclose(unet(x, torch.tensor(5.0), torch.tensor([0, 0])),
                              unet(x, torch.tensor(5.0), torch.tensor([1, 1])))


def test_presets_match_their_advertised_sizes():
    counts = {name: count_parameters(preset_config(name, image_size=32)) for name in PRESETS}
    assert counts == {"tiny": 1112801, "small": 6469889, "base": 35741697}  # base = Ho et al.'s 35.7M
    assert count_parameters(preset_config("tiny", image_size=28)) == counts["tiny"]
    assert sum(p.numel() for p in UNet(preset_config("tiny", image_size=28)).parameters()) == counts["tiny"]


@pytest.mark.parametrize("change, message", [
    ({"image_size": 9}, "image_size 9 must be a multiple of 2"),
    ({"attention_levels": (2,)}, r"attention_levels \(2,\) must lie in 0..1"),
    ({"norm_groups": 3}, "norm_groups 3 must divide"),
    ({"dropout": 1.0}, "dropout must be in"),
])
def test_bad_configs_are_named(change, message):
    with pytest.raises(ConfigError, match=message):
        UNetConfig(**{**TINY.__dict__, **change})
