"""Loading a Stable Diffusion model initialises nothing at random and holds a float16 file once.

Every part (U-Net, VAE, the CLIP text towers, the safety checker) is built on the meta device and
gets the file's tensors by assignment (io/sd_common.py ``assign_weights``, ``load_text_weights``;
models/text.py ``from_state_dict``; io/safety_checker.py). The check wraps the real
``torch.nn.init`` functions (they still run) and counts their calls on tensors that are not on the
meta device: none while ``genpix.load_pipeline`` runs, for diffusers folders (with a safety checker;
the SDXL refiner) and single files (float16 SD 1.x, SDXL). The text encodings of the loaded
models are those of the randomly built model with the weights copied in (the loading before) and
of transformers' CLIPTextModel. A float16 tensor's mapped file pages are given back once its
float32 copy exists (io/mapped_pages.py), measured in a fresh interpreter from /proc/self/status.
"""

from __future__ import annotations

import copy
import json
import mmap
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from diffusers import DDIMScheduler
from diffusers import StableDiffusionPipeline as DiffusersSD
from safetensors.torch import load_file, save_file
from sdxl_fixtures import saved_models
from test_safety_checker import tiny_checker
from test_sd_pipeline import SD_SCHEDULER, models, vocab, write_single_file  # noqa: F401

import genpix
from genpix.io.mapped_pages import file_mappings, float32_state, release_pages
from genpix.io.sd_checkpoint import read_state_dict
from genpix.io.sd_common import assign_weights
from genpix.io.sd_loader import load_sd_components
from genpix.models.text import CLIPTextConfig, CLIPTextModel

MIB = 2**20
PROMPTS = ["a photo of a cat", "an oil painting of a lighthouse at dusk, detailed"]


@contextmanager
def random_inits() -> Iterator[list[str]]:
    """Names of the torch.nn.init functions called on real (not meta) tensors inside the block; the
    functions themselves still run."""
    calls: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in dir(torch.nn.init) if n.endswith("_") and not n.startswith("_")]:
            def counted(tensor, *args, _init=getattr(torch.nn.init, name), _name=name, **kwargs):
                if isinstance(tensor, torch.Tensor) and not tensor.is_meta:
                    calls.append(_name)
                return _init(tensor, *args, **kwargs)

            patch.setattr(torch.nn.init, name, counted)
        yield calls


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory):
    return saved_models(tmp_path_factory)


def half_file(path: Path) -> Path:
    """The single file ``path`` again with its floating-point tensors in float16, as most are distributed."""
    half = path.with_name(path.stem + "-fp16.safetensors")
    save_file({k: v.half() if v.is_floating_point() else v for k, v in load_file(path).items()}, half)
    return half


@pytest.fixture(scope="module")
def sd1_file(models, tmp_path_factory):  # noqa: F811
    """(diffusers pipeline, its folder, its weights as a float16 LDM single file)."""
    _, ref, folder = models("sd1")
    path = tmp_path_factory.mktemp("sd1-file") / "tiny-sd1.safetensors"
    write_single_file(ref, "sd1", path)
    return ref, folder, half_file(path)


@pytest.fixture(scope="module")
def checked_folder(models, tmp_path_factory):  # noqa: F811
    """The tiny SD1 pipeline with a safety checker, saved as a diffusers folder."""
    _, ref, _ = models("sd1")
    checker, extractor = tiny_checker()
    pipe = DiffusersSD(**{**ref.components, "safety_checker": checker, "feature_extractor": extractor,
                          "scheduler": DDIMScheduler.from_config(SD_SCHEDULER)})
    folder = tmp_path_factory.mktemp("checked") / "model"
    pipe.save_pretrained(folder)
    return folder


def test_the_count_sees_a_random_build():
    with random_inits() as calls:
        CLIPTextModel(CLIPTextConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                     num_attention_heads=1))
    assert "normal_" in calls and "kaiming_uniform_" in calls  # embeddings, linear layers
    assert torch.nn.init.normal_.__module__ == "torch.nn.init"  # the real functions back after the block


@pytest.mark.parametrize("layout", ["sd1-folder-with-checker", "sd1-fp16-file", "sdxl-file", "sdxl-refiner-folder"])
def test_loading_initialises_nothing_at_random(layout, request):
    if layout == "sd1-folder-with-checker":
        path, options = request.getfixturevalue("checked_folder"), {}
    elif layout == "sd1-fp16-file":
        _, folder, path = request.getfixturevalue("sd1_file")
        options = {"tokenizer": str(folder / "tokenizer")}
    else:
        _, folder, file = request.getfixturevalue("sdxl")("refiner" if "refiner" in layout else "base")
        path, options = (folder, {}) if layout.endswith("folder") else (file, {"tokenizer": str(folder / "tokenizer")})
    with random_inits() as calls:
        pipe = genpix.load_pipeline(str(path), **options)
        checker = load_sd_components(path, **options).safety_checker
    assert calls == [], f"initialised at random while loading: {sorted(set(calls))}"
    assert (checker is not None) == (layout == "sd1-folder-with-checker")
    modules = [*dict(pipe.parts.modules).values(), *([checker] if checker is not None else [])]
    assert all(not t.is_meta for m in modules for t in [*m.parameters(), *m.buffers()])


def encodings(model: CLIPTextModel, ids: torch.Tensor) -> list[torch.Tensor]:
    """Tokens and pooled vector of the last layer, and the penultimate layer without the final norm (SDXL's)."""
    with torch.no_grad():
        last, penultimate = model(ids), model(ids, clip_skip=1, final_norm=False)
    return [last.tokens, last.pooled, penultimate.tokens]


def loaded_before(model: CLIPTextModel, weights: dict[str, torch.Tensor]) -> CLIPTextModel:
    """``model``'s class built as loading built it before: initialised at random, the weights copied in."""
    args = (model.config, model.text_projection.out_features) if hasattr(model, "text_projection") else (model.config,)
    before = type(model)(*args)
    before.load_state_dict({k: v.float() for k, v in weights.items()})
    return before.eval()


def same_encodings(ours: CLIPTextModel, theirs, ids: torch.Tensor) -> None:
    """Identical to the model loaded the old way; transformers' (float16-rounded weights) within 1e-5."""
    weights = {k if k.startswith(("text_model.", "text_projection.")) else f"text_model.{k}": v.half()
               for k, v in theirs.state_dict().items() if "position_ids" not in k}
    for got, want in zip(encodings(ours, ids), encodings(loaded_before(ours, weights), ids)):
        assert torch.equal(got, want)
    reference = copy.deepcopy(theirs).half().float().eval()
    with torch.no_grad():
        out = reference(ids, output_hidden_states=True)
    pooled = out.text_embeds if hasattr(out, "text_embeds") else out.pooler_output
    got = encodings(ours, ids)
    torch.testing.assert_close(got[0], out.last_hidden_state, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[1], pooled, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[2], out.hidden_states[-2], rtol=1e-5, atol=1e-5)


def test_sd1_text_encodings_are_unchanged(sd1_file):
    ref, folder, path = sd1_file
    parts = load_sd_components(path, tokenizer=folder / "tokenizer")
    same_encodings(parts.text_model, ref.text_encoder, parts.tokenizer(PROMPTS))


def test_sdxl_text_encodings_are_unchanged(sdxl):
    ref, folder, path = sdxl("base")
    parts = load_sd_components(half_file(path), tokenizer=folder / "tokenizer")
    same_encodings(parts.text_model, ref.text_encoder, parts.tokenizer(PROMPTS))
    same_encodings(parts.text_model_2, ref.text_encoder_2, parts.tokenizer_2(PROMPTS))


class WithBuffer(torch.nn.Module):
    def __init__(self, _config) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(2, 2)
        self.register_buffer("positions", torch.arange(4), persistent=False)  # in no file


def test_a_buffer_left_on_the_meta_device_is_named():
    state = {"linear.weight": torch.ones(2, 2), "linear.bias": torch.zeros(2)}
    with pytest.raises(RuntimeError, match="'positions' was not loaded"):
        assign_weights(WithBuffer, None, state, "test module")


def test_pages_are_given_back_only_inside_the_file(tmp_path):
    path = tmp_path / "half.safetensors"
    g = torch.Generator().manual_seed(0)
    original = {f"w{i}": torch.randn(256, 1024, generator=g).half() for i in range(4)}  # 512 KiB each
    save_file(original, path)
    state = read_state_dict(path)
    mappings = file_mappings(path)
    if not mappings:
        pytest.skip("no /proc/self/maps: nothing is given back here")
    converted = float32_state(state, path)
    for key, tensor in original.items():
        assert torch.equal(converted[key], tensor.float())
        assert torch.equal(state[key], tensor)  # given-back pages are read again from the file, unchanged
    anonymous = torch.randn(256, 1024, generator=g).half()
    kept = anonymous.clone()
    assert release_pages(anonymous, mappings) == 0 and torch.equal(anonymous, kept)
    assert release_pages(state["w1"], mappings) >= 512 * 1024 - 2 * mmap.PAGESIZE  # whole pages inside it


# run in a fresh interpreter: RssFile (KiB) before and after converting every tensor of a float16 file
CONVERT_CHILD = """
import json, sys
from genpix.io.mapped_pages import float32_state
from genpix.io.sd_checkpoint import read_state_dict
def rss_file():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("RssFile:"))
state = read_state_dict(sys.argv[1])
before = rss_file()
converted = float32_state(state, sys.argv[1] if sys.argv[2] == "give-back" else None)
print(json.dumps({"grew_kib": rss_file() - before, "sum": sum(float(t.sum()) for t in converted.values())}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads Linux's /proc/self/status")
def test_converting_a_float16_file_keeps_none_of_its_pages(tmp_path):
    path = tmp_path / "large-half.safetensors"
    save_file({f"w{i}": torch.full((1024, 4096), float(i), dtype=torch.float16) for i in range(8)}, path)  # 64 MiB
    size = path.stat().st_size
    grew = {}
    for mode in ("keep", "give-back"):
        child = subprocess.run([sys.executable, "-c", CONVERT_CHILD, str(path), mode], capture_output=True,
                               text=True, check=True)
        report = json.loads(child.stdout.splitlines()[-1])
        assert report["sum"] == pytest.approx(sum(i * 1024 * 4096 for i in range(8)))
        grew[mode] = report["grew_kib"] * 1024
    assert grew["keep"] > size / 2, f"the file's pages were not resident ({grew['keep'] / MIB:.0f} MiB)"
    assert grew["give-back"] < size / 8, f"{grew['give-back'] / MIB:.0f} MiB of the file still resident"
