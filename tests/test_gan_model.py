"""DCGAN networks, losses, stabilisers and mode-collapse diagnostics, at tiny sizes."""

import warnings

import pytest
import torch
from torch import nn

from genpix.config import ConfigError
from genpix.data import load_dataset
from genpix.models.gan import Discriminator, GANConfig, Generator
from genpix.training.diagnostics import ModeCollapseDiagnostics, ModeCollapseWarning, mean_pairwise_distance
from genpix.training.gan import GANTask, discriminator_loss, generator_loss, r1_penalty
from genpix.training.task import Batch


def tiny(**kw) -> GANConfig:
    return GANConfig(**{"image_size": 16, "latent_dim": 8, "width": 4, **kw})


@pytest.mark.parametrize("size,start,layers", [(16, 4, 2), (28, 7, 2), (32, 4, 3), (64, 4, 4)])
def test_shapes_at_every_image_size(size, start, layers):
    config = tiny(image_size=size, channels=3)
    G, D = Generator(config), Discriminator(config)
    assert config.start_size == start and len(config.widths) == layers
    x = G(torch.randn(5, 8))
    assert x.shape == (5, 3, size, size) and x.abs().max() <= 1
    assert D(x).shape == (5,)
    assert config.widths[-1] == 4 and config.widths[0] == 4 * 2 ** (layers - 1)


def test_dcgan_architecture_guidelines():
    """Radford et al. 2016, section 3: no pooling, no FC hidden layers, BN, ReLU/tanh, LeakyReLU."""
    config = tiny(image_size=32)
    G, D = Generator(config), Discriminator(config)
    for net in (G, D):
        kinds = {type(m) for m in net.modules()}
        assert not kinds & {nn.Linear, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d}
    g_layers = list(G.net)
    assert [type(m) for m in g_layers[:3]] == [nn.ConvTranspose2d, nn.BatchNorm2d, nn.ReLU]
    assert type(g_layers[-2]) is nn.ConvTranspose2d and type(g_layers[-1]) is nn.Tanh
    assert all(m.stride == (2, 2) for m in g_layers[3:] if isinstance(m, nn.ConvTranspose2d))
    assert sum(isinstance(m, nn.BatchNorm2d) for m in G.modules()) == 3
    d_layers = list(D.features)
    assert type(d_layers[0]) is nn.Conv2d and type(d_layers[1]) is nn.LeakyReLU  # no BN at the input
    assert all(m.negative_slope == 0.2 for m in D.modules() if isinstance(m, nn.LeakyReLU))
    assert sum(isinstance(m, nn.BatchNorm2d) for m in D.modules()) == 2
    assert all(m.stride == (2, 2) for m in D.features if isinstance(m, nn.Conv2d))
    assert D.out.kernel_size == (4, 4)  # one convolution over the whole last map -> one logit
    assert not any(isinstance(m, nn.ReLU) for m in D.modules())


def test_spectral_norm_normalises_every_d_weight_and_drops_batch_norm():
    D = Discriminator(tiny(stabiliser="spectral_norm"))
    convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(hasattr(m, "parametrizations") for m in convs)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in D.modules())
    D.train()
    for _ in range(20):  # power iterations converge
        D(torch.randn(4, 1, 16, 16))
    for conv in convs:
        sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
        assert sigma == pytest.approx(1.0, abs=0.05)


def test_class_conditioning_changes_the_output_and_needs_labels():
    config = tiny(cond="class", num_classes=10)
    G, D = Generator(config).eval(), Discriminator(config).eval()
    z = torch.randn(1, 8).repeat(2, 1)
    x = G(z, torch.tensor([0, 7]))
    assert not torch.allclose(x[0], x[1])
    logits = D(x[:1].repeat(2, 1, 1, 1), torch.tensor([0, 7]))
    assert logits[0] != logits[1]  # the projection term depends on the label
    with pytest.raises(ValueError, match="needs labels"):
        G(z)
    with pytest.raises(ConfigError, match="needs a dataset with class labels"):
        tiny(cond="class", num_classes=0)


def test_image_sizes_the_generator_cannot_make_are_refused():
    with pytest.raises(ConfigError, match="choose one of 16, 28, 32, 64"):
        tiny(image_size=48)
    with pytest.raises(ConfigError, match="choose one of"):
        tiny(image_size=8)


def test_losses_match_their_equations():
    l = torch.tensor([-3.0, 0.0, 2.0])
    d = torch.sigmoid(l)
    # minimax: log(1 - D(G(z))); non-saturating: -log D(G(z))
    assert generator_loss(l, "minimax").item() == pytest.approx(torch.log(1 - d).mean().item(), rel=1e-5)
    assert generator_loss(l, "non_saturating").item() == pytest.approx(-torch.log(d).mean().item(), rel=1e-5)
    real, fake = torch.tensor([1.5, -0.5]), torch.tensor([0.3, -2.0])
    dr, df = torch.sigmoid(real), torch.sigmoid(fake)
    expect = -(torch.log(dr).mean() + torch.log(1 - df).mean())
    assert discriminator_loss(real, fake).item() == pytest.approx(expect.item(), rel=1e-5)
    smoothed = -((0.9 * torch.log(dr) + 0.1 * torch.log(1 - dr)).mean() + torch.log(1 - df).mean())
    assert discriminator_loss(real, fake, 0.9).item() == pytest.approx(smoothed.item(), rel=1e-5)
    with pytest.raises(ValueError, match="non_saturating or minimax"):
        generator_loss(l, "wasserstein")


def test_non_saturating_loss_keeps_its_gradient_when_d_rejects_the_fakes():
    l = torch.tensor([-8.0], requires_grad=True)  # D(G(z)) ~ 3e-4
    (g_minimax,) = torch.autograd.grad(generator_loss(l, "minimax"), l)
    (g_ns,) = torch.autograd.grad(generator_loss(l, "non_saturating"), l)
    assert abs(g_minimax.item()) < 1e-3 and abs(g_ns.item()) > 0.99


def test_r1_penalty_of_a_linear_critic_is_the_squared_weight_norm():
    w = torch.randn(1, 3, 4, 4)
    x = torch.randn(6, 3, 4, 4, requires_grad=True)
    logits = (x * w).flatten(1).sum(1)
    assert r1_penalty(logits, x).item() == pytest.approx(w.square().sum().item(), rel=1e-5)


@pytest.mark.parametrize("stabiliser", ["none", "label_smoothing", "r1", "spectral_norm"])
def test_each_stabiliser_trains_both_networks(stabiliser):
    torch.manual_seed(0)
    task = GANTask(tiny(stabiliser=stabiliser, cond="class", num_classes=3), lr=2e-4,
                   device=torch.device("cpu"))
    before = {role: [p.detach().clone() for p in m.parameters()] for role, m in task.modules().items()}
    batch = Batch(torch.rand(8, 1, 16, 16), torch.randint(3, (8,)), None)
    metrics = task.train_step(batch)
    expected = {"d_loss", "g_loss", "d_real", "d_fake"} | ({"r1"} if stabiliser == "r1" else set())
    assert set(metrics) == expected and list(metrics)[:4] == ["d_loss", "g_loss", "d_real", "d_fake"]
    assert all(torch.isfinite(v) for v in metrics.values())
    assert 0 < metrics["d_real"] < 1 and 0 < metrics["d_fake"] < 1
    for role, module in task.modules().items():
        changed = [not torch.equal(a, b) for a, b in zip(before[role], module.parameters())]
        assert any(changed), role
    assert all(p.requires_grad for p in task.discriminator.parameters())
    assert task.optimizers()["adam_g"].param_groups[0]["betas"] == (0.5, 0.999)


def test_diagnostics_warn_on_collapse_and_count_classes(tmp_path):
    data = load_dataset("digits", image_size=16, limit=300)
    real = data.images[:100].float() / 255

    def collapsed(z, labels):  # one image whatever z is
        return real[:1].expand(len(z), -1, -1, -1)

    def diverse(z, labels):  # real digits
        return real[torch.arange(len(z)) % 100]

    diag = ModeCollapseDiagnostics(collapsed, 8, n=64)
    with pytest.warns(ModeCollapseWarning, match="step 5: possible mode collapse"):
        record = diag(5, data, tmp_path)
    assert record["diversity_ratio"] == 0 and record["classes_covered"] == 1
    assert sum(record["class_histogram"]) == 64 and len(record["class_histogram"]) == 10
    cached = tmp_path / "diagnostics" / "classifier.safetensors"
    assert cached.is_file()
    stamp = cached.stat().st_mtime_ns
    diag = ModeCollapseDiagnostics(diverse, 8, n=64)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ModeCollapseWarning)
        record = diag(10, data, tmp_path)
    assert cached.stat().st_mtime_ns == stamp  # the cached classifier was reused
    assert record["diversity_ratio"] > 0.7 and record["classes_covered"] >= 8
    assert mean_pairwise_distance(torch.tensor([[0.0, 0.0], [3.0, 4.0]])) == pytest.approx(5.0)
