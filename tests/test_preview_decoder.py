"""The tiny preview decoder: TAESD's published layout (a reference decoder written here from
madebyollin/taesd's taesd.py), diffusers' AutoencoderTiny decoder as the oracle, the file loader,
previews, and the distillation task."""

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from genpix.errors import GenpixError
from genpix.io.checkpoint import CheckpointError
from genpix.io.tiny_decoder import load_tiny_decoder, tiny_decoder_from_state_dict
from genpix.models.autoencoder import AutoencoderConfig, AutoencoderKL
from genpix.models.taesd import TinyDecoder, TinyDecoderConfig
from genpix.pipelines.preview import TinyDecoderSpace, preview_images
from genpix.training.preview_decoder import PreviewDecoderTask, PreviewDecoderTrainingConfig
from genpix.training.task import Batch


# --- madebyollin/taesd taesd.py, as published --------------------------------------------------
def conv(n_in, n_out, **kwargs):
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)


class RefClamp(nn.Module):
    def forward(self, x):
        return torch.tanh(x / 3) * 3


class RefBlock(nn.Module):
    def __init__(self, n_in, n_out):
        super().__init__()
        self.conv = nn.Sequential(conv(n_in, n_out), nn.ReLU(), conv(n_out, n_out), nn.ReLU(), conv(n_out, n_out))
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.fuse = nn.ReLU()

    def forward(self, x):
        return self.fuse(self.conv(x) + self.skip(x))


def RefDecoder(latent_channels=4):
    return nn.Sequential(
        RefClamp(), conv(latent_channels, 64), nn.ReLU(),
        RefBlock(64, 64), RefBlock(64, 64), RefBlock(64, 64), nn.Upsample(scale_factor=2), conv(64, 64, bias=False),
        RefBlock(64, 64), RefBlock(64, 64), RefBlock(64, 64), nn.Upsample(scale_factor=2), conv(64, 64, bias=False),
        RefBlock(64, 64), RefBlock(64, 64), RefBlock(64, 64), nn.Upsample(scale_factor=2), conv(64, 64, bias=False),
        RefBlock(64, 64), conv(64, 3),
    )
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_published_taesd_layout_loads_and_equals_the_reference(tmp_path, suffix):
    torch.manual_seed(0)
    ref = RefDecoder().eval()
    path = tmp_path / f"taesd_decoder{suffix}"
    state = {k: v.contiguous() for k, v in ref.state_dict().items()}
    torch.save(state, path) if suffix == ".pth" else save_file(state, str(path))
    decoder = load_tiny_decoder(path)
    assert decoder.config == TinyDecoderConfig()
    z = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        assert torch.allclose(decoder(z), ref(z), atol=1e-6)


def test_equals_diffusers_autoencoder_tiny_decoder():
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    oracle = AutoencoderTiny().eval()  # TAESD's defaults: blocks (3, 3, 3, 1), 64 channels
    decoder = tiny_decoder_from_state_dict(oracle.state_dict(), "AutoencoderTiny")
    z = torch.randn(1, 4, 8, 8) * 2
    with torch.no_grad():
        expected = oracle.decoder(z)  # diffusers rescales TAESD's [0, 1] to [-1, 1]
        assert torch.allclose(decoder(z) * 2 - 1, expected, atol=1e-5)


def test_shapes_read_from_a_small_non_default_decoder():
    config = TinyDecoderConfig(latent_channels=3, out_channels=1, channels=8, blocks=(2, 1))
    decoder = TinyDecoder(config)
    assert tiny_decoder_from_state_dict(decoder.state_dict(), "x").config == config
    assert decoder(torch.randn(1, 3, 4, 4)).shape == (1, 1, 8, 8)


def test_not_a_tiny_decoder_is_one_line(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"unet.conv_in.weight": torch.zeros(4, 4, 3, 3)}, str(path))
    with pytest.raises(CheckpointError, match="not a tiny"):
        load_tiny_decoder(path)
    broken = {k: v for k, v in TinyDecoder().state_dict().items() if k != "3.conv.2.bias"}
    with pytest.raises(CheckpointError, match="missing weight"):
        tiny_decoder_from_state_dict(broken, "broken")


def test_previews_are_pictures_of_the_latent_size_times_f():
    decoder = TinyDecoder(TinyDecoderConfig(channels=8, blocks=(1, 1, 1)))
    images = preview_images(decoder, torch.randn(3, 4, 6, 5))
    assert [im.size for im in images] == [(20, 24)] * 3 and images[0].mode == "RGB"
    space = TinyDecoderSpace(decoder.half())
    assert space.decode(torch.randn(1, 4, 2, 2)).dtype == torch.float32
    assert space.factor == 4


def tiny_teacher() -> AutoencoderKL:
    torch.manual_seed(0)
    config = AutoencoderConfig(in_channels=1, out_channels=1, block_out_channels=(8, 8), layers_per_block=1,
                               latent_channels=2, norm_num_groups=4, scaling_factor=0.7, sample_size=8)
    return AutoencoderKL(config).eval()


def test_distillation_lowers_the_loss_and_reports_psnr():
    from genpix.data import ImageDataset

    teacher = tiny_teacher()
    config = PreviewDecoderTrainingConfig(image_size=8, channels=1, width=8)
    task = PreviewDecoderTask(config, lr=3e-3, device=torch.device("cpu"), teacher=teacher)
    assert task.student.config.blocks == (2, 1) and task.student.config.latent_channels == 2
    images = torch.rand(16, 1, 8, 8)
    batch = Batch(images, None, None, generator=torch.Generator().manual_seed(0))
    losses = [task.train_step(batch)["loss"].item() for _ in range(30)]
    assert losses[-1] < losses[0] * 0.7
    data = ImageDataset((images * 255).to(torch.uint8), None, None, None, "random")
    metrics = task.evaluate(data)
    assert set(metrics) >= {"psnr_vs_full_decoder", "psnr_full_vs_image"} and metrics["images"] == 16
    assert set(task.modules()) == {"preview_decoder", "first_stage"}


def test_student_stages_must_fit_the_teacher():
    with pytest.raises(GenpixError, match="stages"):
        PreviewDecoderTrainingConfig(image_size=8, channels=1, blocks=(1, 1, 1), first_stage=tiny_teacher().config)


def test_write_keeps_taesd_layout_in_float16(tmp_path):
    from safetensors.torch import load_file

    from genpix.io.tiny_decoder import write_tiny_decoder

    decoder = TinyDecoder(TinyDecoderConfig(channels=8, blocks=(1, 1)))
    path = write_tiny_decoder(tmp_path / "preview_decoder.safetensors", decoder)
    stored = load_file(str(path))
    assert set(stored) == set(decoder.state_dict()) and stored["1.weight"].dtype == torch.float16
    z = torch.randn(1, 4, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(load_tiny_decoder(path)(z), decoder(z), atol=2e-2, rtol=0)


@pytest.mark.parametrize("name, spec, channels, floor_db", [("shapes-ldm", "shapes", 3, 35.0),
                                                             ("fashion-ldm", "fashion-mnist", 1, 28.0)])
def test_bundled_preview_decoders_agree_with_their_full_decoders(name, spec, channels, floor_db):
    """The distilled decoder beside each bundled latent model: the PSNR of its pictures against
    the full decoder's on held-out images (measured in docs/benchmarks.md) above a floor."""
    from genpix.data import load_dataset
    from genpix.metrics.psnr import psnr
    from genpix.pipelines.models import bundled_models
    from genpix.pipelines.preview import find_preview_decoder
    from genpix.training.trained_models import load_teacher

    folder = bundled_models()[name]
    tiny = load_tiny_decoder(find_preview_decoder(folder))
    teacher = load_teacher(folder)
    x = load_dataset(spec, split="test", image_size=32, channels=channels, limit=32).images.float() / 255
    with torch.no_grad():
        z = teacher.encode(x * 2 - 1).mean
        full = teacher.decode(z).add(1).div(2).clamp(0, 1)
        preview = tiny(z * teacher.config.scaling_factor).clamp(0, 1)
    assert psnr(full, preview).mean().item() > floor_db


def test_cli_distils_from_a_bundled_model(run_cli, tmp_path):
    def train(out, *args):
        return run_cli("train", "preview-decoder", "--data", "shapes", "--limit", "16", "--batch-size", "4",
                       "--out", out, "--quiet", "--device", "cpu", "--steps", "1", *args)

    status, stdout, err = train(tmp_path / "run", "--autoencoder", "shapes-ldm", "--width", "8")
    assert status == 0, err
    assert "psnr_vs_full_decoder" in stdout
    from genpix.io.checkpoint import read_model_dir
    from genpix.io.tiny_decoder import tiny_decoder_from_state_dict

    run = read_model_dir(tmp_path / "run")
    assert run.family == "preview-decoder" and set(run.weights) == {"preview_decoder", "first_stage"}
    assert tiny_decoder_from_state_dict(run.weights["preview_decoder"], "run").config.channels == 8
    status, _, err = train(tmp_path / "other")
    assert status != 0 and "--autoencoder is required" in err
    status, _, err = train(tmp_path / "x", "--autoencoder", "fashion-vae")
    assert status != 0 and "without an autoencoder" in err


def test_a_decoder_without_its_last_convolution_is_one_line():
    state = {k: v for k, v in TinyDecoder().state_dict().items() if not k.startswith("19.")}
    with pytest.raises(CheckpointError, match="missing weight"):
        tiny_decoder_from_state_dict(state, "cut")
    with pytest.raises(CheckpointError, match="fewer than two plain convolutions"):
        tiny_decoder_from_state_dict({"3.conv.0.weight": torch.zeros(64, 64, 3, 3)}, "blocks only")
