"""The KL autoencoder (SD VAE layout) against diffusers' AutoencoderKL, the pinned test oracle."""

import pytest
import torch
from diffusers import AutoencoderKL as DiffusersAutoencoderKL

from genpix.config import ConfigError
from genpix.io.checkpoint import load_module_weights
from genpix.models.autoencoder import AutoencoderConfig, AutoencoderKL


def diffusers_vae(block_out_channels, layers_per_block, norm_num_groups=4):
    torch.manual_seed(0)
    levels = len(block_out_channels)
    return DiffusersAutoencoderKL(
        block_out_channels=block_out_channels, layers_per_block=layers_per_block, norm_num_groups=norm_num_groups,
        down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels,
        latent_channels=4, sample_size=32).eval()


@pytest.mark.parametrize("block_out_channels, layers_per_block", [((8, 16), 1), ((8, 16, 16), 2)])
def test_same_weights_give_diffusers_posterior_and_decode(block_out_channels, layers_per_block):
    ref = diffusers_vae(block_out_channels, layers_per_block)
    config = AutoencoderConfig.from_diffusers(dict(ref.config))
    assert config.block_out_channels == block_out_channels and config.downsampling_factor == 2 ** (
        len(block_out_channels) - 1)
    ours = AutoencoderKL(config).eval()
    load_module_weights(ours, ref.state_dict(), "diffusers AutoencoderKL")  # strict: no renaming
    x = torch.rand(2, 3, 16, 24, generator=torch.Generator().manual_seed(1)) * 2 - 1
    z = torch.randn(2, 4, 4, 6, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected, posterior = ref.encode(x).latent_dist, ours.encode(x)
        torch.testing.assert_close(posterior.mean, expected.mean, rtol=0, atol=1e-5)
        torch.testing.assert_close(posterior.logvar, expected.logvar, rtol=0, atol=1e-5)
        torch.testing.assert_close(posterior.kl(), expected.kl(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(posterior.sample(torch.Generator().manual_seed(3)),
                                   expected.sample(torch.Generator().manual_seed(3)), rtol=0, atol=1e-5)
        torch.testing.assert_close(ours.decode(z), ref.decode(z).sample, rtol=0, atol=1e-5)
        reconstruction, _ = ours(x)
        torch.testing.assert_close(reconstruction, ref(x).sample, rtol=0, atol=1e-5)
    assert reconstruction.shape == x.shape


def test_sd_vae_has_the_published_size_and_shapes_on_the_meta_device():
    config = AutoencoderConfig()  # the SD 1.x / 2.x VAE (ch 128, ch_mult 1, 2, 4, 4)
    with torch.device("meta"):
        vae = AutoencoderKL(config)
        assert sum(p.numel() for p in vae.parameters()) == 83_653_863  # 83.65M, as diffusers counts it
        posterior = vae.encode(torch.empty(1, 3, 512, 512))
        assert posterior.mean.shape == (1, 4, 64, 64) and config.downsampling_factor == 8
        assert vae.decode(posterior.mean).shape == (1, 3, 512, 512)


def test_diffusers_sd_config_maps_to_the_defaults():
    with torch.device("meta"):
        ref = DiffusersAutoencoderKL(
            block_out_channels=(128, 256, 512, 512), layers_per_block=2, sample_size=512,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    assert AutoencoderConfig.from_diffusers(dict(ref.config)) == AutoencoderConfig()


@pytest.mark.parametrize("change, message", [
    ({"shift_factor": 0.1159}, "shift_factor=0.1159 is not supported"),
    ({"use_quant_conv": False}, "use_quant_conv=False is not supported"),
    ({"down_block_types": ["DownEncoderBlock2D", "AttnDownEncoderBlock2D"]}, "down_block_types"),
    ({"tiling": True}, "unknown config key 'tiling'"),
    ({"norm_num_groups": 3}, "norm_num_groups 3 must divide"),
])
def test_unsupported_diffusers_options_are_named(change, message):
    config = {"_class_name": "AutoencoderKL", "block_out_channels": [8, 16], "norm_num_groups": 4, **change}
    with pytest.raises(ConfigError, match=message):
        AutoencoderConfig.from_diffusers(config)


def test_image_size_must_be_a_multiple_of_the_downsampling_factor():
    vae = AutoencoderKL(AutoencoderConfig(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4))
    with pytest.raises(ValueError, match="must be a multiple of 2"):
        vae.encode(torch.zeros(1, 3, 15, 16))
