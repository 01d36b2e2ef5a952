"""The Stable Diffusion safety checker (CompVis/stable-diffusion-safety-checker), as diffusers runs
it (diffusers/pipelines/stable_diffusion/safety_checker.py, ``StableDiffusionSafetyChecker.forward``;
the pipeline's ``run_safety_checker``).

1. each generated image, as the uint8 picture the user gets, is prepared like CLIP's training
   images (transformers' ``CLIPImageProcessor``, read from the model's ``feature_extractor/``):
   bicubic resize of the shorter side to 224 (PIL), centre crop 224 x 224, / 255, then
   (x - mean) / std with CLIP's mean and std;
2. CLIP ViT-L/14's image tower (models/clip_vision.py) gives the pooled vector, projected without
   bias to the 768-d joint space: e;
3. cosine similarities of e with 3 "special care" and 17 concept embeddings, each with its own
   threshold; scores are round(cos - threshold + adjustment, 3), the adjustment 0 until a special
   care score is > 0, from then 0.01 (later special scores included, as diffusers' loop does);
4. an image is NSFW when any concept score is > 0; it is replaced by a black image.

The arithmetic of step 3 is diffusers' own (float32 numpy cosines, Python rounding), so the flags
agree at the thresholds too.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from genpix.config import from_dict
from genpix.errors import GenpixError
from genpix.models.clip_vision import CLIPVisionConfig, CLIPVisionTransformer

N_CONCEPTS, N_SPECIAL = 17, 3
SPECIAL_ADJUSTMENT = 0.01  # diffusers' "adjustment" once a special-care concept matches
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # openai CLIP's training statistics (OPENAI_CLIP_MEAN)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PIL_RESAMPLE = {0: Image.NEAREST, 1: Image.LANCZOS, 2: Image.BILINEAR, 3: Image.BICUBIC, 4: Image.BOX,
                5: Image.HAMMING}


class SafetyCheckerError(GenpixError, ValueError):
    """The safety checker's files are missing or do not fit."""


@dataclass(frozen=True)
class ImagePreprocessing:
    """transformers' ``CLIPImageProcessor`` settings (``preprocessor_config.json``)."""

    shortest_edge: int = 224
    crop_height: int = 224
    crop_width: int = 224
    resample: int = 3  # PIL's BICUBIC
    do_resize: bool = True
    do_center_crop: bool = True
    rescale_factor: float = 1 / 255
    do_rescale: bool = True
    do_normalize: bool = True
    image_mean: tuple[float, ...] = field(default=CLIP_MEAN)
    image_std: tuple[float, ...] = field(default=CLIP_STD)

    @classmethod
    def from_transformers(cls, data: dict) -> ImagePreprocessing:
        size, crop = data.get("size", 224), data.get("crop_size", 224)
        flat = {k: v for k, v in data.items() if k in {f.name for f in fields(cls)}}
        if isinstance(size, dict):
            if "shortest_edge" not in size:
                raise SafetyCheckerError(f"feature extractor: only a shortest_edge resize is supported, got {size}")
            size = size["shortest_edge"]
        crop = (crop["height"], crop["width"]) if isinstance(crop, dict) else (crop, crop)
        for key in ("image_mean", "image_std"):
            if key in flat:
                flat[key] = tuple(float(x) for x in flat[key])
        flat.update(shortest_edge=int(size), crop_height=int(crop[0]), crop_width=int(crop[1]))
        if flat.get("resample", 3) not in PIL_RESAMPLE:
            raise SafetyCheckerError(f"feature extractor: unknown resample {flat['resample']}")
        return from_dict(cls, flat, where="feature extractor config")

    def __call__(self, images: list[Image.Image]) -> torch.Tensor:
        """RGB PIL images -> pixel values (B, 3, crop_height, crop_width) float32."""
        out = []
        for image in images:
            image = image.convert("RGB")
            if self.do_resize:
                w, h = image.size
                short, long = (w, h) if w <= h else (h, w)
                new_long = int(self.shortest_edge * long / short)
                size = (self.shortest_edge, new_long) if w <= h else (new_long, self.shortest_edge)
                image = image.resize(size, resample=PIL_RESAMPLE[self.resample])
            x = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)  # (3, H, W) uint8
            if self.do_center_crop:
                top, left = (x.shape[1] - self.crop_height) // 2, (x.shape[2] - self.crop_width) // 2
                if top < 0 or left < 0:
                    raise SafetyCheckerError(f"the image ({x.shape[2]}x{x.shape[1]}) is smaller than the "
                                             f"{self.crop_width}x{self.crop_height} crop")
                x = x[:, top:top + self.crop_height, left:left + self.crop_width]
            x = x.double() * self.rescale_factor if self.do_rescale else x.double()
            x = x.float()
            if self.do_normalize:
                mean = torch.tensor(self.image_mean, dtype=torch.float32)[:, None, None]
                std = torch.tensor(self.image_std, dtype=torch.float32)[:, None, None]
                x = (x - mean) / std
            out.append(x)
        return torch.stack(out)


@dataclass(frozen=True)
class SafetyCheckerConfig:
    vision: CLIPVisionConfig = field(default_factory=CLIPVisionConfig)
    projection_dim: int = 768

    @classmethod
    def from_transformers(cls, data: dict) -> SafetyCheckerConfig:
        """From the ``CLIPConfig`` of a diffusers ``safety_checker/config.json``."""
        if "vision_config" not in data:
            raise SafetyCheckerError("safety checker config.json has no vision_config (not a CLIPConfig)")
        return cls(CLIPVisionConfig.from_transformers(data["vision_config"]), int(data.get("projection_dim", 768)))


class SafetyChecker(nn.Module):
    """checker(images (B, 3, H, W) in [0, 1]) -> (images, nsfw flags): flagged images made black."""

    def __init__(self, config: SafetyCheckerConfig, preprocessing: ImagePreprocessing | None = None) -> None:
        super().__init__()
        self.config = config
        self.preprocessing = preprocessing or ImagePreprocessing()
        d, p = config.vision.hidden_size, config.projection_dim
        self.vision_model = CLIPVisionTransformer(config.vision)
        self.visual_projection = nn.Linear(d, p, bias=False)
        self.concept_embeds = nn.Parameter(torch.ones(N_CONCEPTS, p), requires_grad=False)
        self.special_care_embeds = nn.Parameter(torch.ones(N_SPECIAL, p), requires_grad=False)
        self.concept_embeds_weights = nn.Parameter(torch.ones(N_CONCEPTS), requires_grad=False)  # thresholds
        self.special_care_embeds_weights = nn.Parameter(torch.ones(N_SPECIAL), requires_grad=False)

    @torch.no_grad()
    def flags(self, clip_input: torch.Tensor) -> list[bool]:
        """NSFW flags of preprocessed images (B, 3, 224, 224): diffusers' loop, step 3 above."""
        device = self.visual_projection.weight.device
        embeds = self.visual_projection(self.vision_model(clip_input.to(device)))
        unit = F.normalize(embeds)
        special_cos = torch.mm(unit, F.normalize(self.special_care_embeds).t()).cpu().float().numpy()
        concept_cos = torch.mm(unit, F.normalize(self.concept_embeds).t()).cpu().float().numpy()
        special_thresholds = [w.item() for w in self.special_care_embeds_weights]
        concept_thresholds = [w.item() for w in self.concept_embeds_weights]
        result = []
        for i in range(len(embeds)):
            adjustment = 0.0
            for j, threshold in enumerate(special_thresholds):
                if round(special_cos[i][j] - threshold + adjustment, 3) > 0:
                    adjustment = SPECIAL_ADJUSTMENT
            result.append(any(round(concept_cos[i][j] - threshold + adjustment, 3) > 0
                              for j, threshold in enumerate(concept_thresholds)))
        return result

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, list[bool]]:
        """Images (B, 3, H, W) in [0, 1] -> the same with flagged ones black, and the flags."""
        # the uint8 pictures the user gets (io.images.to_pil's rounding)
        pixels = images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()
        flags = self.flags(self.preprocessing([Image.fromarray(a.squeeze(-1).numpy()) for a in pixels]))
        if any(flags):
            images = images.clone()
            images[torch.tensor(flags)] = 0
        return images, flags
