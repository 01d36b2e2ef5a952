"""Speed of genpix's generators on this machine (``genpix bench``).

Per family (vae, gan, ddpm): training images/s of the family's own training step (the task the
trainer runs, without data loading or files) and sampling ms/image (the decoder for vae/gan, every
named sampler for ddpm); then genpix's U-Net against diffusers' ``UNet2DModel`` with the same levels,
widths, blocks and attention, in the same process (training step and forward, as a ratio); and the
peak memory. Every figure is the median of ``repeats`` timed windows after one warm-up window.

Peak memory: on CUDA the peak allocated by torch per measurement (``max_memory_allocated`` after a
reset); on the CPU the process's peak resident set (``ru_maxrss``), which only grows, so each family
reports the peak so far.
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

from genpix.config import check
from genpix.errors import GenpixError
from genpix.models.unet import PRESETS

FAMILIES: tuple[str, ...] = ("vae", "gan", "ddpm")
DIFFUSERS_HINT = "pip install 'diffusers==0.36.0' (genpix's test extra: pip install -e '.[test]')"


@dataclass(frozen=True)
class BenchConfig:
    families: tuple[str, ...] = FAMILIES
    image_size: int = 28  # H = W of the random training images and the samples
    channels: int = 1
    batch_size: int = 64  # images per training step
    train_steps: int = 5  # training steps per timed window
    sample_n: int = 16  # images per sampling call (one window)
    sampling_steps: int = 50  # steps of each diffusion sampler
    samplers: tuple[str, ...] | None = None  # diffusion samplers to time (None: every registered one)
    preset: str = "tiny"  # the ddpm U-Net (genpix.models.unet.PRESETS)
    repeats: int = 3  # timed windows per figure; figures are their medians
    diffusers: bool = True  # compare the U-Net with diffusers' UNet2DModel (skipped with a note if missing)
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [f for f in self.families if f not in FAMILIES]
        check(not unknown and len(self.families) >= 1,
              f"unknown family {', '.join(unknown) or '(none)'}; choose from: {', '.join(FAMILIES)}")
        check(self.channels in (1, 3), f"channels must be 1 or 3, got {self.channels}")
        check(self.preset in PRESETS, f"unknown preset {self.preset!r}; choose one of: {', '.join(PRESETS)}")
        if self.samplers is not None:
            from genpix.diffusion import samplers

            for name in self.samplers:
                samplers.get(name)  # an unknown name: one line listing the known ones
        check(min(self.batch_size, self.train_steps, self.sample_n, self.sampling_steps, self.repeats) >= 1,
              "batch size, train steps, sample n, sampling steps and repeats must be at least 1")


@dataclass(frozen=True)
class Timing:
    median_s: float  # median seconds of one window
    windows_s: tuple[float, ...]


def time_windows(fn: Callable[[], Any], repeats: int, sync: Callable[[], None] = lambda: None) -> Timing:
    """Run ``fn`` once to warm up, then ``repeats`` timed windows; seconds per window."""
    fn()
    sync()
    windows = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        sync()
        windows.append(time.perf_counter() - tic)
    return Timing(statistics.median(windows), tuple(windows))


class Memory:
    """Peak memory of what runs between ``reset()`` and ``peak_mib()`` (see the module docstring)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.device = device

    def reset(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_mib(self) -> dict[str, float]:
        if self.cuda:
            return {"peak_cuda_mib": round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)}
        return {"peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)


def make_task(family: str, config: BenchConfig, device: torch.device):
    """The family's training task (from the registry of ``genpix train``) with its default model at the
    benchmark's image size, and the benchmark's U-Net preset where the family has one."""
    from genpix.training.families import get_family
    from genpix.training.trainer import TrainConfig

    spec = get_family(family)
    preset = {"preset": config.preset} if "preset" in {f.name for f in fields(spec.config)} else {}
    model_config = spec.config(image_size=config.image_size, channels=config.channels, **preset)
    return spec.make_task(model_config, TrainConfig(lr=spec.default_lr, seed=config.seed), device)


def _samplers(family: str, task, config: BenchConfig, device: torch.device) -> dict[str, Callable[[], Any]]:
    """Name -> a call generating ``sample_n`` images."""
    g = torch.Generator().manual_seed(config.seed)
    n = config.sample_n
    if family == "vae":
        z = torch.randn(n, task.config.latent_dim, generator=g).to(device)
        return {"decoder": lambda: task.vae.eval().decode(z)}
    if family == "gan":
        z = torch.randn(n, task.config.latent_dim, generator=g).to(device)
        return {"generator": lambda: task.generate(z)}
    from genpix.diffusion import samplers

    names = config.samplers or tuple(samplers.names())
    denoiser = task.config.denoiser(task.ema.eval())
    noise = torch.randn(n, config.channels, config.image_size, config.image_size, generator=g).to(device)
    return {name: (lambda name=name: samplers.sample(denoiser, noise, config.sampling_steps, name,
                                                     generator=torch.Generator(device).manual_seed(0)))
            for name in names}


def time_training(task, config: BenchConfig, device: torch.device) -> Timing:
    """Windows of ``train_steps`` training steps of ``task`` on one batch of random images."""
    from genpix.training.task import Batch

    g = torch.Generator().manual_seed(config.seed)
    images = torch.rand(config.batch_size, config.channels, config.image_size, config.image_size, generator=g)
    batch = Batch(images.to(device), None, None, generator=torch.Generator(device).manual_seed(config.seed))

    def train_window() -> None:
        for _ in range(config.train_steps):
            task.train_step(batch)

    return time_windows(train_window, config.repeats, Memory(device).sync)


def bench_family(family: str, config: BenchConfig, device: torch.device) -> dict[str, Any]:
    """Training images/s and sampling ms/image of one family."""
    memory = Memory(device)
    memory.reset()
    torch.manual_seed(config.seed)
    task = make_task(family, config, device)
    train = time_training(task, config, device)
    sampling = {}
    with torch.inference_mode():
        for name, call in _samplers(family, task, config, device).items():
            timing = time_windows(call, config.repeats, memory.sync)
            sampling[name] = round(1000 * timing.median_s / config.sample_n, 3)
    trained = [m for role, m in task.modules().items() if role != "ema"]  # the EMA copy is not trained
    return {"parameters": sum(p.numel() for m in trained for p in m.parameters()),
            "train_images_per_s": round(config.batch_size * config.train_steps / train.median_s, 2),
            "train_window_s": [round(s, 4) for s in train.windows_s],
            "sample_ms_per_image": sampling,
            **({"sampling_steps": config.sampling_steps} if family == "ddpm" else {}),
            **memory.peak_mib()}


def require_diffusers():
    """diffusers' UNet2DModel class; GenpixError naming the install command when diffusers is missing."""
    try:
        from diffusers import UNet2DModel
    except ImportError:
        raise GenpixError(f"diffusers is not installed, so the U-Net comparison cannot run: {DIFFUSERS_HINT}, "
                          f"or pass --no-diffusers") from None
    return UNet2DModel


def diffusers_twin(unet_config):
    """diffusers' UNet2DModel with the same levels, widths, residual blocks, attention and groups as
    genpix's U-Net config."""
    UNet2DModel = require_diffusers()
    u = unet_config
    widths = tuple(u.base_channels * m for m in u.channel_mult)
    down = tuple("AttnDownBlock2D" if i in u.attention_levels else "DownBlock2D" for i in range(len(widths)))
    up = tuple("AttnUpBlock2D" if i in u.attention_levels else "UpBlock2D" for i in reversed(range(len(widths))))
    return UNet2DModel(sample_size=u.image_size, in_channels=u.channels, out_channels=u.channels,
                       block_out_channels=widths, layers_per_block=u.num_res_blocks, down_block_types=down,
                       up_block_types=up, norm_num_groups=u.norm_groups, attention_head_dim=u.head_channels)


def bench_network(forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], module: torch.nn.Module,
                  config: BenchConfig, device: torch.device) -> dict[str, Any]:
    """One U-Net: a training step (forward, MSE, backward, AdamW) in images/s and a forward in ms/image."""
    memory = Memory(device)
    memory.reset()
    g = torch.Generator().manual_seed(config.seed)
    shape = (config.batch_size, config.channels, config.image_size, config.image_size)
    x = torch.randn(shape, generator=g).to(device)
    t = torch.randint(0, 1000, (config.batch_size,), generator=g).float().to(device)
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)

    def train_window() -> None:
        for _ in range(config.train_steps):
            loss = (forward(x, t) - x).square().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    module.train()
    train = time_windows(train_window, config.repeats, memory.sync)
    module.eval()
    with torch.inference_mode():
        infer = time_windows(lambda: forward(x, t), config.repeats, memory.sync)
    return {"parameters": sum(p.numel() for p in module.parameters()),
            "train_images_per_s": round(config.batch_size * config.train_steps / train.median_s, 2),
            "forward_ms_per_image": round(1000 * infer.median_s / config.batch_size, 4),
            **memory.peak_mib()}


def bench_unet_vs_diffusers(config: BenchConfig, device: torch.device) -> dict[str, Any]:
    """genpix's ddpm U-Net against its diffusers twin; ratios > 1 mean genpix is faster."""
    from genpix.diffusion.config import DDPMConfig
    from genpix.models.unet import UNet

    unet_config = DDPMConfig(image_size=config.image_size, channels=config.channels, preset=config.preset).unet_config()
    twin = diffusers_twin(unet_config).to(device)
    torch.manual_seed(config.seed)
    ours = UNet(unet_config).to(device)
    mine = bench_network(lambda x, t: ours(x, t), ours, config, device)
    theirs = bench_network(lambda x, t: twin(x, t).sample, twin, config, device)
    return {"preset": config.preset, "genpix": mine, "diffusers": theirs,
            "train_ratio": round(mine["train_images_per_s"] / theirs["train_images_per_s"], 3),
            "forward_ratio": round(theirs["forward_ms_per_image"] / mine["forward_ms_per_image"], 3)}


def run_bench(config: BenchConfig, device: torch.device, progress: Callable[[str], None] = lambda _: None
              ) -> dict[str, Any]:
    """Every measurement of ``config``: the JSON ``genpix bench --json`` writes."""
    from genpix.version import __version__

    result: dict[str, Any] = {"genpix": __version__, "torch": torch.__version__, "device": str(device),
                              "threads": torch.get_num_threads(), "config": asdict(config), "families": {}}
    if config.diffusers:
        require_diffusers()  # before minutes of timing, not after
    for family in config.families:
        progress(f"{family}: training and sampling")
        result["families"][family] = bench_family(family, config, device)
    if config.diffusers:
        progress("U-Net: genpix against diffusers' UNet2DModel")
        result["unet_vs_diffusers"] = bench_unet_vs_diffusers(config, device)
    return result


def summary_lines(result: dict[str, Any]) -> list[str]:
    """The readable table ``genpix bench`` prints."""
    c = result["config"]
    lines = [f"genpix {result['genpix']}, torch {result['torch']}, {result['device']}, {result['threads']} threads; "
             f"{c['image_size']}x{c['image_size']}x{c['channels']}, batch {c['batch_size']}, "
             f"medians of {c['repeats']} windows"]
    for family, f in result["families"].items():
        memory = ", ".join(f"{k} {v:g}" for k, v in f.items() if k.startswith("peak_"))
        lines.append(f"{family:5s} {f['parameters'] / 1e6:6.2f}M params  train "
                     f"{f['train_images_per_s']:9.1f} images/s  ({memory})")
        steps = f" ({f['sampling_steps']} steps)" if "sampling_steps" in f else ""
        for name, ms in f["sample_ms_per_image"].items():
            lines.append(f"      sample {name + steps:30s} {ms:10.3f} ms/image")
    u = result.get("unet_vs_diffusers")
    if u:
        for who in ("genpix", "diffusers"):
            w = u[who]
            lines.append(f"U-Net {who:9s} {w['parameters'] / 1e6:6.2f}M params  train "
                         f"{w['train_images_per_s']:9.1f} images/s  forward {w['forward_ms_per_image']:8.3f} ms/image")
        lines.append(f"genpix / diffusers: training {u['train_ratio']:.2f}x, forward {u['forward_ratio']:.2f}x "
                     f"(> 1: genpix faster)")
    return lines
