"""Training task of latent diffusion (Rombach et al. 2022, eq. 2-3): the DDPM objective (training/ddpm.py's
forward_process, optimiser_step and update_ema) on the frozen autoencoder's latents z * scaling_factor,
with the conditioning encoder tau_theta trained jointly, caption (or label) dropout for
classifier-free guidance and EMA weights."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from genpix.config import from_dict, to_dict
from genpix.data import ImageDataset
from genpix.data.colour_names import BASIC_COLOURS, dominant_colour
from genpix.diffusion import samplers
from genpix.diffusion.denoiser import CFGDenoiser
from genpix.diffusion.ldm_config import LDMConfig
from genpix.errors import GenpixError
from genpix.io.checkpoint import CheckpointError, load_module_weights, read_model_dir
from genpix.io.images import make_grid, to_pil
from genpix.models.autoencoder import AutoencoderKL
from genpix.models.tokenizer import ByteTokenizer
from genpix.training.autoencoder import AutoencoderTrainingConfig
from genpix.training.ddpm import forward_process, optimiser_step, update_ema
from genpix.training.families import Family
from genpix.training.flags import Flag
from genpix.training.task import Batch
from genpix.training.trained_models import initial_weights, load_teacher, read_trained_config, read_trained_model


TRAINING_CAPTION_CACHE = 1 << 16  # distinct captions whose frozen encodings a training run keeps


def load_first_stage(path: str | Path) -> AutoencoderKL:
    """A trained autoencoder run folder -> its network, with the measured scaling factor."""
    try:
        model = read_model_dir(path)
    except CheckpointError as error:
        raise GenpixError(f"--autoencoder: {error}") from None
    if model.family != "autoencoder":
        raise GenpixError(f"--autoencoder {path}: holds a {model.family} model, not an autoencoder "
                          f"(train one with `genpix train autoencoder`)")
    config = from_dict(AutoencoderTrainingConfig, model.config["model"], where=f"{model.path}/config.json model")
    if config.scaling_factor is None:
        raise GenpixError(f"--autoencoder {path}: no measured latent scaling factor (its run ended without "
                          f"held-out images to measure it on)")
    if "autoencoder" not in model.weights:
        raise GenpixError(f"--autoencoder {path}: {model.path}/model.safetensors has no 'autoencoder' weights")
    autoencoder = AutoencoderKL(config.network())
    load_module_weights(autoencoder, model.weights["autoencoder"], f"{model.path}/model.safetensors")
    return autoencoder


class LDMTask:
    family = "ldm"

    def __init__(self, config: LDMConfig, *, lr: float, device: torch.device, seed: int = 0,
                 autoencoder: AutoencoderKL | None = None, initial: Mapping[str, torch.Tensor] | None = None,
                 preview: int = 8, preview_steps: int = 20) -> None:
        """``autoencoder``: the trained first stage (a new run); on resume it is rebuilt from
        ``config.first_stage`` and its weights come back with the checkpoint. ``initial``: weights of a
        trained model of the same config to start from (fine-tuning, --init-from)."""
        if autoencoder is not None:
            config = replace(config, first_stage=autoencoder.config)
        if config.first_stage is None:
            raise GenpixError("--autoencoder is required: a trained autoencoder run (genpix train autoencoder)")
        if config.colour_head_only and autoencoder is not None and initial is None:  # a new run, not --init-from
            raise GenpixError("colour_head_only trains the colour head of a trained model: give --init-from MODEL "
                              "(a latent diffusion model with --colour-token), not --autoencoder")
        self.config, self.device = config, device
        self.autoencoder = (autoencoder or AutoencoderKL(config.first_stage)).to(device).eval().requires_grad_(False)
        self.model = config.network().to(device)
        if initial is not None:
            load_module_weights(self.model, _with_new_colour_head(self.model, initial),
                                "--init-from (its U-Net and text encoder must match this run's model section)")
        if config.colour_head_only:
            _train_only_the_colour_reading(self.model)
        frozen = {id(m): m for m in self.model.conditioner.frozen}  # shared, not copied, by the EMA
        self.ema = copy.deepcopy(self.model, frozen).requires_grad_(False)
        trained = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trained, lr=lr, weight_decay=config.weight_decay)
        self.first_param = trained[0]
        self.network = self.model  # what train_step calls; under torchrun, through DDP (distribute)
        f = config.first_stage.downsampling_factor
        self.preview_noise = torch.randn(preview, config.first_stage.latent_channels, config.image_size // f,
                                         config.image_size // f, generator=torch.Generator().manual_seed(seed))
        self.preview_steps = preview_steps
        # the first stage is frozen and the batches are not augmented: q(z|x) of a dataset row is the same
        # every epoch, so (mean, std) are computed once per row (the posterior sample stays fresh every step)
        self._posteriors: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._colours: dict[int, int] = {}  # dataset row -> the basic colour the reader finds in it
        for encoder in self.model.conditioner.frozen:  # the frozen text encoder: every caption once per run
            encoder.cache_size = max(encoder.cache_size, TRAINING_CAPTION_CACHE)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"model": self.model, "ema": self.ema, "first_stage": self.autoencoder}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"adamw": self.optimizer}

    def model_config(self) -> dict[str, Any]:
        return to_dict(self.config)

    def distribute(self, wrap) -> None:
        # the U-Net and tau_theta through DDP; the frozen autoencoder and the EMA copy stay plain
        if self.config.colour_head_only:
            raise GenpixError("colour_head_only trains in one process: run it without torchrun")
        self.network = wrap(self.model)

    @torch.no_grad()
    def latents(self, batch: Batch) -> torch.Tensor:
        """z0 = scaling_factor * z, z ~ q(z|x), eps of the posterior sample per image from the batch."""
        mean, std = self._posterior(batch)
        eps = batch.randn(*mean.shape[1:])
        return (mean + std * eps) * self.config.first_stage.scaling_factor

    def _posterior(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) of q(z|x) for the batch; rows of a known dataset index come from the cache."""
        if batch.indices is None:
            posterior = self.autoencoder.encode(batch.images * 2 - 1)
            return posterior.mean, posterior.std
        rows = batch.indices.tolist()
        missing = [i for i, row in enumerate(rows) if row not in self._posteriors]
        if missing:
            posterior = self.autoencoder.encode(batch.images[missing] * 2 - 1)
            for i, mean, std in zip(missing, posterior.mean, posterior.std):
                self._posteriors[rows[i]] = (mean.clone(), std.clone())
        mean, std = zip(*(self._posteriors[row] for row in rows))
        return torch.stack(mean), torch.stack(std)

    def conditions(self, batch: Batch, drop: torch.Tensor) -> torch.Tensor:
        """tau_theta's inputs for the batch; where ``drop`` (B,) the empty caption / null class."""
        cfg, conditioner = self.config, self.model.conditioner
        if cfg.cond == "text":
            if batch.captions is None:
                raise GenpixError("--cond text needs a dataset with captions")
            captions = ["" if d else c for c, d in zip(batch.captions, drop.tolist())]
            return conditioner.inputs(captions, device=self.device, warn=False)  # counted once, by the CLI
        if cfg.cond == "class":
            return torch.where(drop, torch.full_like(batch.labels, cfg.num_classes), batch.labels)
        return conditioner.inputs(labels=drop, device=self.device)

    def loss_terms(self, network, batch: Batch, model: torch.nn.Module | None = None) -> dict[str, torch.Tensor]:
        """LDM eq. 2 with tau_theta, || target - eps_theta(z_t, t, tau_theta(y)) ||^2 on z0 = latents
        ("diffusion"); with the colour token, the cross-entropy of the colour head (of ``model``, the live
        model unless given) against the colour the reader finds in each picture ("colour"); with
        colour_head_only, that term alone."""
        if self.config.colour_head_only:
            y = self.conditions(batch, batch.rand() < self.config.cond_drop_prob)
            return {"colour": self._colour_term(model or self.model, batch, y)}
        z0 = self.latents(batch)
        noised = forward_process(self.config, z0, batch)  # t, then eps: per image from the batch
        drop = batch.rand() < self.config.cond_drop_prob
        y = self.conditions(batch, drop)
        hide = None  # colour-word dropout: the U-Net must take these rows' colour from the colour token
        if self.config.colour_word_dropout > 0:
            hide = batch.rand() < self.config.colour_word_dropout
        terms = {"diffusion": noised.loss(network(noised.x_t, noised.t, y, hide), self.config.loss)}
        if self.config.colour_token:
            terms["colour"] = self._colour_term(model or self.model, batch, y)
        return terms

    def loss(self, network, batch: Batch, model: torch.nn.Module | None = None) -> torch.Tensor:
        return self.total_loss(self.loss_terms(network, batch, model))

    def total_loss(self, terms: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The training loss: the diffusion term plus colour_loss_weight times the colour term (the
        colour term alone with colour_head_only)."""
        if "diffusion" not in terms:
            return terms["colour"]
        return terms["diffusion"] + self.config.colour_loss_weight * terms.get("colour", 0.0)

    def _colour_term(self, model: torch.nn.Module, batch: Batch, y: torch.Tensor) -> torch.Tensor:
        """The cross-entropy of ``model``'s colour head on inputs y against the batch pictures' colours."""
        return F.cross_entropy(model.conditioner.colour_logits(y), self._picture_colours(batch))

    def _picture_colours(self, batch: Batch) -> torch.Tensor:
        """(B,) int64: the basic colour (data/colour_names.py) of each batch picture (grey ones as RGB),
        read once per row."""
        rows = batch.indices.tolist() if batch.indices is not None else [None] * len(batch.images)
        missing = [i for i, row in enumerate(rows) if row is None or row not in self._colours]
        pixels = batch.images[missing].mul(255).round().to(torch.uint8).expand(-1, 3, -1, -1).cpu().numpy()
        read = dict(zip(missing, (BASIC_COLOURS.index(dominant_colour(p)) for p in pixels)))
        for i, colour in read.items():
            if rows[i] is not None:
                self._colours[rows[i]] = colour
        colours = [read[i] if i in read else self._colours[row] for i, row in enumerate(rows)]
        return torch.tensor(colours, device=batch.images.device)

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.model.train()
        terms = self.loss_terms(self.network, batch)
        metrics = optimiser_step(self.total_loss(terms), self.optimizer, self.model, self.config.grad_clip)
        if "colour" in terms:
            metrics["colour_loss"] = terms["colour"].detach()
        update_ema(self.ema, self.model, self.config.ema_decay, self.optimizer, self.first_param)
        return metrics

    @torch.no_grad()
    def snapshot(self, batch: Batch) -> dict[str, Image.Image]:
        """One row of EMA samples from fixed noise (DDIM, guidance scale 3) for the batch's first
        captions (labels), above the training images they describe."""
        self.ema.eval()
        n = min(self.preview_noise.shape[0], batch.images.shape[0])
        rows = Batch(batch.images[:n], None if batch.labels is None else batch.labels[:n],
                     None if batch.captions is None else batch.captions[:n])
        y = self.conditions(rows, torch.zeros(n, dtype=torch.bool, device=self.device))
        if self.config.guided:
            null = self.model.conditioner.null_inputs(n, self.device)
            denoiser = CFGDenoiser(self.config.denoiser(self.ema), {"y": y}, {"y": null}, 3.0)
        else:
            denoiser = self.config.denoiser(lambda z_t, t: self.ema(z_t, t, y))
        z0 = samplers.sample(denoiser, self.preview_noise[:n].to(self.device), self.preview_steps, "DDIM",
                             generator=torch.Generator().manual_seed(0))
        x = self.autoencoder.decode(z0 / self.config.first_stage.scaling_factor).add(1).div(2).clamp(0, 1)
        return {"samples": make_grid(to_pil(torch.cat([x, rows.images]).float().cpu()), columns=n)}

    @torch.no_grad()
    def evaluate(self, data: ImageDataset, limit: int = 256) -> dict[str, float]:
        """Mean loss of the EMA network on up to ``limit`` held-out images, at fixed draws."""
        self.ema.eval()
        generator = torch.Generator(self.device).manual_seed(1234)
        losses, hits = [], []
        for start in range(0, min(limit, len(data)), 64):
            stop = min(start + 64, limit, len(data))
            images = data.images[start:stop].to(self.device).float().div(255)
            labels = None if data.labels is None else data.labels[start:stop].to(self.device)
            captions = None if data.captions is None else list(data.captions[start:stop])
            batch = Batch(images, labels, captions, generator=generator)
            losses.append(self.loss(self.ema, batch, self.ema))
            if self.config.colour_token:
                y = self.model.conditioner.inputs(captions, device=self.device, warn=False)
                hits.append(self.ema.conditioner.colour_logits(y).argmax(1) == self._picture_colours(batch))
        figures = {"test_loss": torch.stack(losses).mean().item(), "images": min(limit, len(data))}
        if hits:  # how often the colour head reads a held-out caption as its picture's colour
            figures["colour_head_accuracy"] = torch.cat(hits).float().mean().item()
        return figures


def _train_only_the_colour_reading(model: torch.nn.Module) -> None:
    """Freeze all of ``model`` but its colour head's reading (LayerNorm, attention scorer and
    classifier): the token embedding E stays as the U-Net learned it."""
    head = model.conditioner.colour
    model.requires_grad_(False)
    for part in (head.norm, head.score, head.classifier):
        part.requires_grad_(True)


def _with_new_colour_head(model: torch.nn.Module, initial: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """--init-from weights for ``model``; a model without a colour head gets this run's fresh one."""
    state = dict(initial)
    head = {k: v for k, v in model.state_dict().items() if k.startswith("conditioner.colour.")}
    return state if any(k in state for k in head) else {**head, **state}


def _ldm_task_options(options: Mapping[str, Any], train_config: Any) -> dict[str, Any]:
    """The first stage: --autoencoder for a new run, or --init-from's own (a fine-tuning run, which
    also starts from that model's weights); on --resume the run's own (from its checkpoint)."""
    autoencoder, init_from = options.get("autoencoder"), options.get("init_from")
    if options.get("resume"):
        if autoencoder is not None or init_from is not None:
            raise GenpixError("--resume: the run keeps the autoencoder and weights it was started with; "
                              "leave --autoencoder and --init-from out")
        return {}
    if init_from is not None:
        if autoencoder is not None:
            raise GenpixError("--init-from: the model's U-Net works in its own autoencoder's latents; "
                              "leave --autoencoder out")
        model = read_trained_model(init_from, "--init-from", "ldm")
        return {"initial": initial_weights(model), "autoencoder": load_teacher(model, "--init-from")}
    if autoencoder is None:
        raise GenpixError("--autoencoder is required: the run folder of a trained autoencoder "
                          "(genpix train autoencoder --data ... --out runs/ae), or --init-from a latent "
                          "diffusion model to fine-tune")
    return {"autoencoder": load_first_stage(autoencoder)}


def _ldm_base_model(options: Mapping[str, Any]) -> dict[str, Any]:
    """A fine-tuning run (--init-from) starts from that model's model section (its U-Net, text encoder,
    schedule and loss); --config and the flags change it, the data sets the size. colour_head_only is
    how that model's last stage was trained, not part of the model: a run trains all of it unless told."""
    if options.get("init_from") is None:
        return {}
    section = read_trained_config(options["init_from"], "--init-from", "ldm").get("model", {})
    elsewhere = ("first_stage", "image_size", "channels", "num_classes", "colour_head_only")
    return {k: v for k, v in section.items() if k not in elsewhere}


def _ldm_check_data(model_config: LDMConfig, data: ImageDataset) -> None:
    """--cond text needs captions; warn about captions the learned encoder will truncate."""
    if model_config.cond != "text":
        return
    if data.captions is None:
        raise GenpixError(f"--cond text needs captions, and {data.name} has none (captioned: digits, shapes, emoji, "
                          f"(fashion-)mnist, a folder with .txt sidecars or metadata.jsonl); or use --cond class/none")
    if model_config.text_encoder == "learned":
        limit, tokenizer = model_config.text_max_length, ByteTokenizer(model_config.text_max_length)
        long = sum(len(tokenizer.encode(c)) > limit for c in set(data.captions))
        if long:
            warnings.warn(f"{long} distinct captions are longer than --text-max-length {limit} bytes "
                          f"(with bos and eos) and will be truncated", stacklevel=2)


FAMILY = Family(
    "ldm", "latent diffusion with text, class or no conditioning (Rombach et al. 2022)", LDMConfig, LDMTask,
    default_lr=2e-4, train_defaults={"warmup_steps": 100, "lr_schedule": "cosine"},
    hidden=frozenset({"first_stage"}),  # from --autoencoder
    options=(Flag("autoencoder", str, "the trained autoencoder run folder to diffuse in (genpix train "
                                      "autoencoder); required for a new run", metavar="RUN"),
             Flag("init_from", str, "fine-tune: start from the weights of a trained latent diffusion model (run "
                                    "folder, model folder or bundled name) and diffuse in its autoencoder",
                  metavar="MODEL")),
    task_options=_ldm_task_options, check_data=_ldm_check_data, base_model=_ldm_base_model,
    help={"cond": "text: the dataset's captions; class: its labels; none: unconditional",
          "text_encoder": "learned: a small byte-level transformer trained jointly; minilm: the frozen "
                          "all-MiniLM-L6-v2",
          "text_width": "learned encoder: width = context size", "text_layers": "learned encoder: layers",
          "text_heads": "learned encoder: attention heads", "text_max_length": "learned encoder: bytes per caption",
          "cond_drop_prob": "caption (label) dropout for classifier-free guidance",
          "colour_token": "text: a learned head reads the asked basic colour from the caption's token states "
                          "and adds it to the context as one more token (trained on the pictures' colours)",
          "colour_loss_weight": "weight of the colour head's cross-entropy in the loss",
          "colour_dropout": "dropout in the colour head's classifier",
          "colour_word_dropout": "share of captions whose colour words (the tokens the colour head attends to) "
                                 "the U-Net does not see, so it learns the colour from the colour token",
          "colour_head_only": "train only the colour head's reading of the caption (its token embedding, the "
                              "U-Net and the text encoder frozen; the loss is its cross-entropy), e.g. on "
                              "--init-from a model with the head and more varied captions",
          "block_out_channels": "U-Net channels per level", "layers_per_block": "U-Net resnets per level",
          "head_channels": "channels per attention head", "norm_num_groups": "U-Net GroupNorm groups",
          "context_dim": "class embedding width", "schedule": "noise schedule (scaled_linear: LDM's)",
          "timesteps": "T", "beta_start": "first beta", "beta_end": "last beta",
          "prediction": "what the network predicts", "loss": "mse or mae",
          "min_snr_gamma": "min-SNR loss weighting, e.g. 5 (default off)",
          "ema_decay": "EMA decay of the sampling weights", "grad_clip": "max gradient norm, 0 = off",
          "weight_decay": "AdamW weight decay"})
