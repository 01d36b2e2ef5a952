import pytest
import torch

from genpix.config import ConfigError
from genpix.models.vae import VAE, VAEConfig


def count(module_params):
    return sum(p.numel() for p in module_params)


def test_layout_matches_the_seed_parameter_counts():
    # seed listings 17.1 and 17.3: encoder 69,076 parameters, decoder 65,089
    vae = VAE(VAEConfig())
    encoder = count(vae.encoder.parameters()) + count(vae.hidden.parameters()) + \
        count(vae.to_mu.parameters()) + count(vae.to_logvar.parameters())
    decoder = count(vae.from_z.parameters()) + count(vae.decoder.parameters())
    assert (encoder, decoder) == (69_076, 65_089)


@pytest.mark.parametrize("size,channels,widths", [(28, 1, (32, 64)), (32, 3, (16, 32, 64))])
def test_shapes_and_range(size, channels, widths):
    vae = VAE(VAEConfig(image_size=size, channels=channels, widths=widths, latent_dim=5))
    x = torch.rand(3, channels, size, size)
    mu, logvar = vae.encode(x)
    assert mu.shape == logvar.shape == (3, 5)
    y = vae.decode(torch.randn(4, 5))
    assert y.shape == (4, channels, size, size)
    assert 0 <= y.min() and y.max() <= 1


def test_kl_term_is_the_closed_form():
    vae = VAE(VAEConfig(latent_dim=3))
    mu = torch.tensor([[0.5, -1.0, 0.0]])
    logvar = torch.tensor([[0.0, 0.3, -0.7]])
    vae.encode = lambda x: (mu, logvar)
    terms = vae.loss(torch.rand(1, 1, 28, 28))
    expected = sum(0.5 * (m**2 + torch.exp(lv) - 1 - lv) for m, lv in zip(mu[0], logvar[0]))
    assert terms["kl"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_reconstruction_is_summed_over_pixels():
    torch.manual_seed(0)
    vae = VAE(VAEConfig(reconstruction="mse", beta=0.0))
    x = torch.rand(2, 1, 28, 28)
    terms = vae.loss(x)
    assert terms["loss"].item() == pytest.approx(terms["reconstruction"].item())
    assert terms["reconstruction"].item() > 28 * 28 * 0.01  # a per-pixel mean would be far below


@pytest.mark.parametrize("kwargs,message", [
    ({"latent_dim": 0}, "latent_dim must be at least 1"),
    ({"image_size": 30}, "multiple of 4"),
    ({"channels": 2}, "channels must be 1 or 3"),
])
def test_bad_configs_are_rejected(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        VAEConfig(**kwargs)
