"""The SD safety checker (models/safety_checker.py) against diffusers' StableDiffusionSafetyChecker.

A tiny random CLIP vision tower (32x32 inputs, 4x4 patches, 2 layers, 16-d projection, as
diffusers' own pipeline tests shrink it) with random concept embeddings; transformers'
CLIPImageProcessor (resize, centre crop, CLIP mean/std) as the feature extractor. The thresholds
are set in each test from the images' cosine similarities so that exactly one of two images is
flagged, and genpix must give diffusers' flags and outputs: for the checker alone, and for a whole
diffusers-format pipeline folder with safety_checker/ and feature_extractor/ (flagged images
black in both, a warning, ``info["nsfw"]``; ``safety_checker=False`` / ``--no-safety-checker``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler
from diffusers import StableDiffusionPipeline as DiffusersSD
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from test_sd_pipeline import CFG, NEGATIVE, PROMPT, SD_SCHEDULER, SEED, SIZE, STEPS, models, vocab  # noqa: F401
from transformers import CLIPConfig, CLIPImageProcessor

import genpix
from genpix.io.images import to_pil
from genpix.io.safety_checker import load_safety_checker
from genpix.models.safety_checker import SafetyCheckerError

TINY_VISION = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                   patch_size=4)


def tiny_checker() -> tuple[StableDiffusionSafetyChecker, CLIPImageProcessor]:
    torch.manual_seed(0)
    config = CLIPConfig(text_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                         num_attention_heads=4),
                        vision_config=TINY_VISION, projection_dim=16)
    checker = StableDiffusionSafetyChecker(config).eval()
    with torch.no_grad():
        checker.concept_embeds.copy_(torch.randn(17, 16))
        checker.special_care_embeds.copy_(torch.randn(3, 16))
    extractor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return checker, extractor


def cosines(checker: StableDiffusionSafetyChecker, clip_input: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(concept, special) cosine similarities (B, 17), (B, 3), as diffusers computes them."""
    with torch.no_grad():
        e = torch.nn.functional.normalize(checker.visual_projection(checker.vision_model(clip_input)[1]))
        unit = torch.nn.functional.normalize
        return (torch.mm(e, unit(checker.concept_embeds).t()).numpy(),
                torch.mm(e, unit(checker.special_care_embeds).t()).numpy())


def flag_one_of_two(checker: StableDiffusionSafetyChecker, clip_input: torch.Tensor) -> list[bool]:
    """Thresholds that flag exactly one of the two images through one concept (the one the two
    differ most on), all others out of reach; returns the flags that should result."""
    concept, _ = cosines(checker, clip_input)
    j = int(np.abs(concept[0] - concept[1]).argmax())
    assert abs(concept[0, j] - concept[1, j]) > 0.02, "the two images are too alike to separate"
    with torch.no_grad():
        checker.concept_embeds_weights.fill_(1.5)
        checker.special_care_embeds_weights.fill_(1.5)
        checker.concept_embeds_weights[j] = float(concept[:, j].mean())
    return [bool(concept[0, j] > concept[1, j]), bool(concept[1, j] > concept[0, j])]


def save_checker(checker, extractor, tmp_path):
    checker.save_pretrained(tmp_path / "safety_checker")
    extractor.save_pretrained(tmp_path / "feature_extractor")
    return load_safety_checker(tmp_path / "safety_checker", tmp_path / "feature_extractor")


def smooth_images(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    small = torch.rand(n, 3, 4, 4, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.interpolate(small, size=(h, w), mode="bilinear")


def test_checker_matches_diffusers(tmp_path):
    """Preprocessing, pooled embedding, flags and outputs, on non-square 40x48 images (resize and crop)."""
    ref, extractor = tiny_checker()
    images = smooth_images(2, 48, 40, 1)
    clip_input = extractor(to_pil(images), return_tensors="pt").pixel_values
    expected_flags = flag_one_of_two(ref, clip_input)
    ours = save_checker(ref, extractor, tmp_path)
    torch.testing.assert_close(ours.preprocessing(to_pil(images)), clip_input, rtol=0, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(ours.vision_model(clip_input), ref.vision_model(clip_input)[1], rtol=0, atol=1e-5)
    theirs, their_flags = ref(clip_input, images.clone())
    out, flags = ours(images)
    assert flags == their_flags == expected_flags and sum(flags) == 1
    assert torch.equal(out, theirs)
    assert out[flags.index(True)].abs().max() == 0 and torch.equal(out[flags.index(False)], images[flags.index(False)])


def test_special_care_adjustment_matches_diffusers(tmp_path):
    """A special-care match adds 0.01 to every concept score of that image: a concept 0.005 below
    its threshold is flagged only with it."""
    ref, extractor = tiny_checker()
    images = smooth_images(2, 32, 32, 4)
    clip_input = extractor(to_pil(images), return_tensors="pt").pixel_values
    concept, special = cosines(ref, clip_input)
    k = int(np.abs(special[0] - special[1]).argmax())
    hit = int(special[:, k].argmax())  # the image that matches special concept k
    assert abs(special[0, k] - special[1, k]) > 0.02
    j = int((concept[hit] - concept[1 - hit]).argmax())
    assert concept[hit, j] - concept[1 - hit, j] > 0.02
    with torch.no_grad():
        ref.special_care_embeds_weights.fill_(1.5)
        ref.special_care_embeds_weights[k] = float(special[:, k].mean())
        ref.concept_embeds_weights.fill_(1.5)
        ref.concept_embeds_weights[j] = float(concept[hit, j]) + 0.005  # reached only with the adjustment
    ours = save_checker(ref, extractor, tmp_path)
    theirs, their_flags = ref(clip_input, images.clone())
    out, flags = ours(images)
    assert flags == their_flags and flags[hit] and not flags[1 - hit]
    assert torch.equal(out, theirs)


@pytest.fixture
def checked_folder(models, tmp_path):  # noqa: F811
    """The tiny SD1 pipeline with a safety checker whose thresholds flag the first or second of the
    two images made from ``latents``, saved; -> (diffusers pipeline, folder, latents, expected flags)."""
    _, ref, plain_folder = models("sd1")
    latents = torch.randn(2, 4, SIZE // 2, SIZE // 2, generator=torch.Generator().manual_seed(21))
    plain = genpix.load_pipeline(str(plain_folder))
    images = plain(prompt=PROMPT, negative_prompt=NEGATIVE, steps=STEPS, sampler="DDIM", cfg_scale=CFG, seed=SEED,
                   width=SIZE, height=SIZE, latents=latents, n=2).tensors
    checker, extractor = tiny_checker()
    expected = flag_one_of_two(checker, extractor(to_pil(images), return_tensors="pt").pixel_values)
    pipe = DiffusersSD(**{**ref.components, "safety_checker": checker, "feature_extractor": extractor,
                          "scheduler": DDIMScheduler.from_config(SD_SCHEDULER)})
    pipe.save_pretrained(tmp_path / "checked")
    return pipe, tmp_path / "checked", latents, expected


def test_pipeline_folder_with_a_safety_checker_matches_diffusers(checked_folder):
    ref, folder, latents, expected = checked_folder
    result = ref(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=STEPS, guidance_scale=CFG, height=SIZE,
                 width=SIZE, latents=latents, num_images_per_prompt=2, generator=torch.Generator().manual_seed(SEED),
                 output_type="np")
    assert result.nsfw_content_detected == expected
    pipe = genpix.load_pipeline(str(folder))
    with pytest.warns(UserWarning, match="potential NSFW content was detected in 1 of 2 images"):
        out = pipe(prompt=PROMPT, negative_prompt=NEGATIVE, steps=STEPS, sampler="DDIM", cfg_scale=CFG, seed=SEED,
                   width=SIZE, height=SIZE, latents=latents, n=2)
    assert out.info["nsfw"] == expected
    ours = out.tensors.permute(0, 2, 3, 1).numpy()
    assert float(np.abs(ours - result.images).max()) < 1e-4
    flagged = expected.index(True)
    assert ours[flagged].max() == 0 and ours[1 - flagged].std() > 0.01  # black, and a real picture
    unchecked = genpix.load_pipeline(str(folder), safety_checker=False)
    out = unchecked(prompt=PROMPT, negative_prompt=NEGATIVE, steps=STEPS, sampler="DDIM", cfg_scale=CFG, seed=SEED,
                    width=SIZE, height=SIZE, latents=latents, n=2)
    assert out.info["nsfw"] is None and out.tensors[flagged].max() > 0


def test_no_safety_checker_flag(models, run_cli, tmp_path):  # noqa: F811
    """Thresholds below every cosine flag every image: black PNGs, unless --no-safety-checker."""
    from PIL import Image

    _, ref, _ = models("sd1")
    checker, extractor = tiny_checker()
    with torch.no_grad():
        checker.concept_embeds_weights.fill_(-2.0)
    DiffusersSD(**{**ref.components, "safety_checker": checker, "feature_extractor": extractor}).save_pretrained(
        tmp_path / "model")
    for flag, black in (((), True), (("--no-safety-checker",), False)):
        out = tmp_path / f"out{len(flag)}"
        status, _, err = run_cli("generate", PROMPT, "--model", tmp_path / "model", "--steps", 1, "--sampler", "DDIM",
                                 "--seed", SEED, "-n", 2, "-o", out, *flag)
        assert status == 0, err
        pictures = [np.asarray(Image.open(f)) for f in sorted(out.glob("*.png"))]
        assert len(pictures) == 2 and all((p.max() == 0) == black for p in pictures)


def test_missing_feature_extractor_is_one_line_error(tmp_path):
    ref, extractor = tiny_checker()
    ref.save_pretrained(tmp_path / "safety_checker")
    with pytest.raises(SafetyCheckerError, match="the safety checker needs .*preprocessor_config.json"):
        load_safety_checker(tmp_path / "safety_checker", tmp_path / "feature_extractor")


def test_hub_layout_of_transformers_4_loads(tmp_path):
    """CompVis/stable-diffusion-safety-checker as the hub has it: weights under
    vision_model.vision_model.* (transformers 4) with position_ids, and the old feature extractor
    config (int size and crop_size, CLIPFeatureExtractor)."""
    import json

    from safetensors.torch import save_file

    from genpix.models.safety_checker import ImagePreprocessing

    ref, extractor = tiny_checker()
    new = save_checker(ref, extractor, tmp_path / "new")
    old = {k.replace("vision_model.", "vision_model.vision_model.", 1) if k.startswith("vision_model.") else k: v
           for k, v in ref.state_dict().items()}
    old["vision_model.vision_model.embeddings.position_ids"] = torch.arange(65)[None]
    (tmp_path / "old" / "safety_checker").mkdir(parents=True)
    (tmp_path / "old" / "feature_extractor").mkdir()
    save_file(old, tmp_path / "old" / "safety_checker" / "model.safetensors")
    (tmp_path / "old" / "safety_checker" / "config.json").write_text(
        (tmp_path / "new" / "safety_checker" / "config.json").read_text())
    legacy = {"crop_size": 32, "do_center_crop": True, "do_normalize": True, "do_resize": True,
              "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": [0.48145466, 0.4578275, 0.40821073],
              "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "size": 32}
    (tmp_path / "old" / "feature_extractor" / "preprocessor_config.json").write_text(json.dumps(legacy))
    loaded = load_safety_checker(tmp_path / "old" / "safety_checker", tmp_path / "old" / "feature_extractor")
    assert loaded.preprocessing == new.preprocessing == ImagePreprocessing(shortest_edge=32, crop_height=32,
                                                                           crop_width=32)
    for key, tensor in new.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], tensor), key
