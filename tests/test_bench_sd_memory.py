"""benchmarks/bench_sd_memory.py: the full-size single files it writes are the ones genpix's loaders
read (names and shapes, checked on the meta device: nothing allocated), and its tiny form runs end to end."""

import json
import sys
from pathlib import Path

import pytest
import torch

from genpix.io.sd_checkpoint import convert_ldm_unet, convert_ldm_vae
from genpix.io.sd_clip import find_sdxl_text_encoders, find_text_encoder
from genpix.io.sd_config import infer_unet_config, infer_vae_config, recognise_family
from genpix.models.autoencoder import AutoencoderConfig
from genpix.models.sd_unet import SD1, SDXL_BASE
from genpix.models.text import CLIPTextConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_sd_memory import BIG_G, FAMILIES, checkpoint_tensors, main  # noqa: E402

# stabilityai/stable-diffusion-xl-base-1.0 as diffusers counts it: unet, vae, text_encoder, text_encoder_2
SDXL_COUNTS = {"unet": 2_567_463_684, "vae": 83_653_863, "text": 123_060_480, "text_2": 694_659_840}


def meta_checkpoint(family: str) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    with torch.device("meta"):
        return checkpoint_tensors(FAMILIES[family], torch.float16)


def test_the_sdxl_file_is_sdxl_base_in_the_sgm_layout():
    checkpoint, counts = meta_checkpoint("sdxl")
    assert counts == SDXL_COUNTS
    assert recognise_family(checkpoint) == "sdxl"
    big = "conditioner.embedders.1.model."
    assert checkpoint[big + "transformer.resblocks.31.attn.in_proj_weight"].shape == (3 * 1280, 1280)
    assert checkpoint[big + "text_projection"].dtype == torch.float16
    found_l, found_g, pooled = find_sdxl_text_encoders(checkpoint)
    assert (found_l.config, found_g.config, pooled) == (CLIPTextConfig.sd1(), BIG_G, 1280)
    unet = infer_unet_config(checkpoint, addition_time_embed_dim=256)
    assert unet == SDXL_BASE
    assert len(convert_ldm_unet(checkpoint, unet)) == len([k for k in checkpoint if k.startswith("model.")])
    vae = infer_vae_config(checkpoint)
    assert vae == AutoencoderConfig()
    assert convert_ldm_vae(checkpoint, vae)["decoder.mid_block.attentions.0.to_q.weight"].shape == (512, 512)


def test_the_sd15_file_is_sd15_in_the_ldm_layout():
    checkpoint, counts = meta_checkpoint("sd15")
    assert counts == {"unet": 859_520_964, "vae": 83_653_863, "text": 123_060_480}
    assert recognise_family(checkpoint) == "sd"
    assert infer_unet_config(checkpoint) == SD1 and find_text_encoder(checkpoint).config == CLIPTextConfig.sd1()
    convert_ldm_unet(checkpoint, SD1)
    convert_ldm_vae(checkpoint, infer_vae_config(checkpoint))


@pytest.mark.slow
def test_the_tiny_sdxl_run_loads_and_generates(tmp_path):
    out = tmp_path / "memory.json"
    main(["--family", "sdxl", "--tiny", "--steps", "1", "--sampler", "Euler", "--tmp", str(tmp_path),
          "--json", str(out)])
    run = json.loads(out.read_text())["runs"][0]
    assert (run["family"], run["tiny"], run["dtype"]) == ("sdxl", True, "fp16")
    assert set(run["parameters"]) == {"unet", "vae", "text", "text_2"}
    assert run["file_bytes"] > 2 * sum(run["parameters"].values())  # float16, plus the header
    assert run["load"]["load_s"] > 0 and run["load"]["after_load_mib"]["RssAnon"] > 0
    assert run["generate"]["images"] == ["00000.png"] and run["generate"]["peak_rss_mib"] > 0
    assert list(tmp_path.iterdir()) == [out]  # the temporary folder is gone
