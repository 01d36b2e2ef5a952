"""LoRA / LyCORIS files applied to genpix's SD modules, against diffusers and independent formulas.

A tiny random SD 1.x pipeline (test_sd_pipeline.py's fixture) is saved as a diffusers folder;
random LoRA files are written in kohya's names (attention, feed-forward, projections and, for
LoCon, the resnets' 3x3 convolutions; text-encoder attention and MLP) and in diffusers / PEFT's.
diffusers loads each with ``load_lora_weights`` and fuses it at a scale into its U-Net and text
encoder; genpix merges it with ``NetworkLibrary.applied``: the U-Net's and the text encoder's
outputs must agree to float32 rounding, and after the block genpix's weights must be the very
original tensors. LoHa and LoKr, which diffusers does not load, are compared with the LyCORIS
formulas written out here and added to diffusers' weights by hand.
"""

from __future__ import annotations

import threading

import pytest
import torch
from safetensors.torch import save_file
from test_sd_pipeline import tiny_diffusers, vocab  # noqa: F401  (the vocab fixture)

from genpix.io.lora_files import read_network_file, short_hash
from genpix.io.sd_loader import load_sd_components
from genpix.models.cpu_prepack import prepack_convolutions
from genpix.models.lora import NetworkWeightsError
from genpix.pipelines.extra_networks import (ExtraNetworkError, NetworkLibrary, NetworkSpec, parse_lora_option,
                                             parse_prompt_networks)

ATOL = 2e-4
UNET_LINEAR = ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2")
TE_LINEAR = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


@pytest.fixture(scope="module")
def sd1(tmp_path_factory, vocab):  # noqa: F811
    tmp = tmp_path_factory.mktemp("sd1")
    ref = tiny_diffusers(tmp, vocab, "sd1")
    ref.save_pretrained(tmp / "model")
    return ref, tmp / "model"


def lora_targets(ref, convs: bool = False) -> dict[str, torch.nn.Module]:
    """kohya key -> diffusers module: what sd-scripts targets (LoCon: also the 3x3 convolutions)."""
    found = {}
    for name, module in ref.unet.named_modules():
        linear = name.endswith(UNET_LINEAR) or name.endswith(("proj_in", "proj_out"))
        conv = convs and name.endswith(("conv1", "conv2")) and ".resnets." in name
        if linear or conv:
            found["lora_unet_" + name.replace(".", "_")] = module
    for name, module in ref.text_encoder.named_modules():
        if name.endswith(TE_LINEAR):  # kohya's names: text_model.encoder... (transformers 5 drops text_model.)
            found["lora_te_text_model_" + name.removeprefix("text_model.").replace(".", "_")] = module
    return found


def kohya_lora(ref, rank: int = 4, alpha: float = 2.0, convs: bool = False, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, module in lora_targets(ref, convs).items():
        w = module.weight
        down_shape = (rank, *w.shape[1:]) if w.ndim == 4 and w.shape[-1] == 3 else (rank, w.shape[1], *w.shape[2:])
        up_shape = (w.shape[0], rank, *((1, 1) if w.ndim == 4 else ()))
        state[f"{key}.lora_down.weight"] = torch.randn(down_shape, generator=g) * 0.3
        state[f"{key}.lora_up.weight"] = torch.randn(up_shape, generator=g) * 0.3
        state[f"{key}.alpha"] = torch.tensor(alpha)
    return state


def peft_lora(ref, rank: int = 4, seed: int = 1) -> dict:
    """diffusers' own format: unet.<path>.lora_A/B.weight, text_encoder.<path>.lora_A/B.weight."""
    kohya = kohya_lora(ref, rank, rank, seed=seed)
    state = {}
    for key, tensor in kohya.items():
        module, _, part = key.partition(".")
        if part == "alpha":
            continue
        unet = module.startswith("lora_unet_")
        name = {k.replace(".", "_"): k for k in (dict(ref.unet.named_modules()) if unet else
                                                  dict(ref.text_encoder.named_modules()))}
        path = name[module.removeprefix("lora_unet_" if unet else "lora_te_text_model_")]  # transformers 5 names
        ab = "lora_A" if part.startswith("lora_down") else "lora_B"
        state[f"{'unet' if unet else 'text_encoder'}.{path}.{ab}.weight"] = tensor
    return state


def genpix_parts(folder, prepack: bool = False):
    parts = load_sd_components(folder)
    if prepack:
        prepack_convolutions(parts.unet)
    return parts


INPUTS = dict(x=torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(5)), t=torch.tensor([999.0, 10.0]))


def reference_outputs(ref, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        context = ref.text_encoder(ids)[0]
        eps = ref.unet(INPUTS["x"], INPUTS["t"], encoder_hidden_states=context.expand(2, -1, -1)).sample
    return context, eps


def genpix_outputs(parts, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        context = parts.text_model(ids).tokens
        eps = parts.unet(INPUTS["x"], INPUTS["t"], context.expand(2, -1, -1))
    return context, eps


def prompt_ids(parts) -> torch.Tensor:
    return parts.tokenizer(["a photo of an astronaut riding a horse"], max_length=77)


def fused(ref_pipe, state: dict, scale: float, tmp_path):
    """A copy of the diffusers pipeline with the LoRA fused at ``scale`` by diffusers
    (``load_lora_weights``, ``fuse_lora``). diffusers 0.36 names kohya's text-encoder modules
    ``text_model.encoder...``, which transformers 5 no longer has, so kohya's text-encoder part is
    added here by the formula W += scale * alpha / r * up @ down (sd-scripts networks/lora.py)."""
    import copy

    pipe = copy.deepcopy(ref_pipe)
    kohya_te = {k: v for k, v in state.items() if k.startswith("lora_te_")}
    path = tmp_path / "for_diffusers.safetensors"
    save_file({k: v for k, v in state.items() if k not in kohya_te}, str(path))
    pipe.load_lora_weights(str(tmp_path), weight_name=path.name, adapter_name="x")
    pipe.fuse_lora(lora_scale=scale, components=["unet", "text_encoder"])
    pipe.unload_lora_weights()
    modules = {"lora_te_text_model_" + n.replace(".", "_"): m for n, m in pipe.text_encoder.named_modules()}
    with torch.no_grad():
        for key in {k.partition(".")[0] for k in kohya_te}:
            up, down = kohya_te[f"{key}.lora_up.weight"], kohya_te[f"{key}.lora_down.weight"]
            modules[key].weight += scale * kohya_te[f"{key}.alpha"] / down.shape[0] * up @ down
    return pipe


@pytest.mark.parametrize("kind, scale, prepack", [("kohya", 0.7, False), ("locon", 1.3, True), ("peft", 0.8, False)])
def test_lora_matches_diffusers_fused(sd1, tmp_path, kind, scale, prepack):
    ref, folder = sd1
    state = peft_lora(ref) if kind == "peft" else kohya_lora(ref, convs=kind == "locon")
    path = tmp_path / "Lora" / f"{kind}.safetensors"
    path.parent.mkdir()
    save_file(state, str(path))
    parts = genpix_parts(folder, prepack)
    ids = prompt_ids(parts)
    plain = genpix_outputs(parts, ids)
    expected = reference_outputs(fused(ref, state, scale, tmp_path), ids)
    assert (expected[1] - reference_outputs(ref, ids)[1]).abs().max() > 1e-2  # the LoRA changes the output
    library = NetworkLibrary(tmp_path / "Lora")
    before = {k: v for k, v in parts.unet.named_parameters()}
    with library.applied(parts.unet, {"lora_te_": parts.text_model}, [NetworkSpec(kind, scale, scale)]):
        got = genpix_outputs(parts, ids)
    for ours, theirs in zip(got, expected):
        torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=1e-4)
    after = genpix_outputs(parts, ids)
    for ours, theirs in zip(after, plain):
        assert torch.equal(ours, theirs)  # nothing leaks
    assert all(p is before[k] for k, p in parts.unet.named_parameters())


def test_te_and_unet_weights_apply_separately(sd1, tmp_path):
    """<lora:NAME:TE:UNET>: the text encoder's change at TE, the U-Net's at UNET (0 leaves it as it is)."""
    ref, folder = sd1
    (tmp_path / "Lora").mkdir()
    save_file(kohya_lora(ref), str(tmp_path / "Lora" / "style.safetensors"))
    parts = genpix_parts(folder)
    ids = prompt_ids(parts)
    plain_context, plain_eps = genpix_outputs(parts, ids)
    _, specs = parse_prompt_networks("a cat <lora:style:1:0>")
    with NetworkLibrary(tmp_path / "Lora").applied(parts.unet, {"lora_te_": parts.text_model}, specs):
        context, _ = genpix_outputs(parts, ids)
        eps = parts.unet(INPUTS["x"], INPUTS["t"], plain_context.expand(2, -1, -1)).detach()
    assert not torch.allclose(context, plain_context)
    torch.testing.assert_close(eps, plain_eps, rtol=0, atol=1e-6)


# --- LyCORIS: LoHa and LoKr against the formulas ------------------------------------------------


def loha_module(w: torch.Tensor, rank: int, g: torch.Generator) -> dict:
    flat_in = w[0].numel()
    return {"hada_w1_a": torch.randn(w.shape[0], rank, generator=g) * 0.3,
            "hada_w1_b": torch.randn(rank, flat_in, generator=g) * 0.3,
            "hada_w2_a": torch.randn(w.shape[0], rank, generator=g) * 0.3,
            "hada_w2_b": torch.randn(rank, flat_in, generator=g) * 0.3, "alpha": torch.tensor(2.0)}


def lokr_module(w: torch.Tensor, rank: int, g: torch.Generator) -> dict:
    out, inp = w.shape[0], w[0].numel()
    a, c = 2, 4  # W1 [a, c] whole, W2 [out/a, in/c] = w2_a @ w2_b
    return {"lokr_w1": torch.randn(a, c, generator=g) * 0.3,
            "lokr_w2_a": torch.randn(out // a, rank, generator=g) * 0.3,
            "lokr_w2_b": torch.randn(rank, inp // c, generator=g) * 0.3, "alpha": torch.tensor(3.0)}


def lycoris_delta(parts: dict, shape) -> torch.Tensor:
    """LyCORIS (lycoris/modules/loha.py, lokr.py): dW = (w1a w1b) * (w2a w2b) * alpha / r, or
    kron(w1, w2a w2b) * alpha / r, r the inner size of the factored matrix."""
    if "hada_w1_a" in parts:
        r = parts["hada_w1_b"].shape[0]
        dw = (parts["hada_w1_a"] @ parts["hada_w1_b"]) * (parts["hada_w2_a"] @ parts["hada_w2_b"])
    else:
        r = parts["lokr_w2_b"].shape[0]
        dw = torch.kron(parts["lokr_w1"], parts["lokr_w2_a"] @ parts["lokr_w2_b"])
    return dw.reshape(shape) * parts["alpha"] / r


@pytest.mark.parametrize("kind", ["loha", "lokr"])
def test_lycoris_matches_formulas(sd1, tmp_path, kind):
    import copy

    ref, folder = sd1
    g = torch.Generator().manual_seed(3)
    make = loha_module if kind == "loha" else lokr_module
    state, expected = {}, copy.deepcopy(ref)
    targets = lora_targets(expected, convs=True)
    multiplier = 0.6
    with torch.no_grad():
        for key, module in targets.items():
            parts = make(module.weight, 2, g)
            state.update({f"{key}.{p}": t for p, t in parts.items()})
            module.weight += lycoris_delta(parts, module.weight.shape) * multiplier
    (tmp_path / "Lora").mkdir()
    save_file(state, str(tmp_path / "Lora" / f"{kind}.safetensors"))
    parts = genpix_parts(folder, prepack=True)
    ids = prompt_ids(parts)
    with NetworkLibrary(tmp_path / "Lora").applied(parts.unet, {"lora_te_": parts.text_model},
                                                   [NetworkSpec(kind, multiplier, multiplier)]):
        got = genpix_outputs(parts, ids)
    for ours, theirs in zip(got, reference_outputs(expected, ids)):
        torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=1e-4)


def one_layer_lora(folder, tmp_path, name: str, rank: int, alpha: float, seed: int, extra=None):
    """A LoRA file changing one attention projection: (genpix parts, that module, its weight, down, up)."""
    parts = genpix_parts(folder)
    module = parts.unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1.to_q
    w = module.weight.detach().clone()
    g = torch.Generator().manual_seed(seed)
    down, up = torch.randn(rank, w.shape[1], generator=g), torch.randn(w.shape[0], rank, generator=g)
    key = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
    (tmp_path / "Lora").mkdir()
    state = {f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up, f"{key}.alpha": torch.tensor(alpha)}
    state.update({f"{key}.{k}": v for k, v in (extra or {}).items()})
    save_file(state, str(tmp_path / "Lora" / f"{name}.safetensors"))
    return parts, module, w, down, up


def test_dora_scale_follows_sd_webui(sd1, tmp_path):
    """dora_scale [1, in] (sd-webui's column norm): W' = m (W + s dW) / ||W + s dW||_col, then * multiplier."""
    _, folder = sd1
    magnitude = torch.rand(1, 64, generator=torch.Generator().manual_seed(9)) + 0.5
    parts, module, w, down, up = one_layer_lora(folder, tmp_path, "dora", 2, 1.0, 9, {"dora_scale": magnitude})
    merged = w + up @ down / 2
    expected = w + (merged * magnitude / merged.norm(dim=0, keepdim=True) - w) * 0.5
    with NetworkLibrary(tmp_path / "Lora").applied(parts.unet, {}, [NetworkSpec("dora", 0.5, 0.5)]):
        torch.testing.assert_close(module.weight, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(module.weight, w)


# --- prompts, names, bad input --------------------------------------------------------------------


def test_prompt_tags_are_parsed_and_removed():
    clean, specs = parse_prompt_networks("a <lora:one:0.5> cat <lora:two:0.3:0.9>, <lyco:three> <lora:four:unet=0.2>")
    assert clean == "a  cat ,  "
    assert specs == [NetworkSpec("one", 0.5, 0.5), NetworkSpec("two", 0.3, 0.9), NetworkSpec("three", 1.0, 1.0),
                     NetworkSpec("four", 1.0, 0.2)]
    with pytest.warns(UserWarning, match="hypernet"):
        assert parse_prompt_networks("x <hypernet:h:1>")[0] == "x "
    with pytest.raises(ExtraNetworkError, match="LoRA weight 'strong' in <lora:one:strong> is not a number"):
        parse_prompt_networks("<lora:one:strong>")
    assert parse_lora_option("/a/b.safetensors:0.5") == NetworkSpec("/a/b.safetensors", 0.5, 0.5)
    assert parse_lora_option("/a/b.safetensors") == NetworkSpec("/a/b.safetensors")


def test_bad_networks_are_one_line_errors(sd1, tmp_path):
    ref, folder = sd1
    lora_dir = tmp_path / "Lora"
    lora_dir.mkdir()
    save_file(kohya_lora(ref), str(lora_dir / "watercolor_style.safetensors"))
    parts = genpix_parts(folder)
    library = NetworkLibrary(lora_dir)
    te = {"lora_te_": parts.text_model}
    before = dict(parts.unet.named_parameters())
    with pytest.raises(ExtraNetworkError, match=r"no LoRA named 'watercolour_style' .*close names: watercolor_style"):
        with library.applied(parts.unet, te, [NetworkSpec("watercolour_style")]):
            pass
    save_file({"lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": torch.zeros(2, 1280),
               "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": torch.zeros(1280, 2)},
              str(lora_dir / "xl.safetensors"))
    with pytest.raises(NetworkWeightsError, match=r"match no module of this model: it looks like an SDXL LoRA"):
        with library.applied(parts.unet, te, [NetworkSpec("xl")]):
            pass
    key = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
    save_file({f"{key}.lora_down.weight": torch.zeros(2, 640), f"{key}.lora_up.weight": torch.zeros(640, 2)},
              str(lora_dir / "wide.safetensors"))
    with pytest.raises(NetworkWeightsError, match="is for another model family"):
        with library.applied(parts.unet, te, [NetworkSpec("wide")]):
            pass
    key = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"  # fits SD 1.x and SDXL shapes
    save_file({f"{key}.lora_down.weight": torch.zeros(2, 64), f"{key}.lora_up.weight": torch.zeros(64, 2)},
              str(lora_dir / "xlmeta.safetensors"), metadata={"ss_base_model_version": "sdxl_base_v1-0"})
    with pytest.raises(ExtraNetworkError, match="'xlmeta' was trained for sdxl_base_v1-0, and this is an SD 1.x/2.x"):
        with library.applied(parts.unet, te, [NetworkSpec("xlmeta")]):
            pass
    assert all(p is before[k] for k, p in parts.unet.named_parameters())  # nothing half-applied


class _Payload:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def test_pickled_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"lora_unet_x.lora_down.weight": torch.zeros(1), "boom": _Payload()}, path)
    with pytest.raises(Exception, match="refused"):
        read_network_file(path)
    assert not (tmp_path / "PWNED").exists()


def test_hash_is_sd_webui_addnet_hash(tmp_path):
    """sha256 of the bytes after the safetensors header, 12 hex digits (modules/hashes.py)."""
    import hashlib

    path = tmp_path / "n.safetensors"
    save_file({"a.lora_down.weight": torch.ones(2, 2)}, str(path), metadata={"ss_output_name": "nice"})
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    assert short_hash(path) == hashlib.sha256(data[8 + n:]).hexdigest()[:12]
    assert read_network_file(path).alias == "nice"


def test_concurrent_requests_get_their_own_networks(sd1, tmp_path):
    """Two threads applying different LoRAs to one model each see exactly their own merge."""
    ref, folder = sd1
    lora_dir = tmp_path / "Lora"
    lora_dir.mkdir()
    save_file(kohya_lora(ref, seed=1), str(lora_dir / "a.safetensors"))
    save_file(kohya_lora(ref, seed=2), str(lora_dir / "b.safetensors"))
    parts = genpix_parts(folder)
    ids = prompt_ids(parts)
    library = NetworkLibrary(lora_dir)
    te = {"lora_te_": parts.text_model}
    alone = {}
    for name in "ab":  # b's merge reuses a's memory: it must equal a fresh library's
        with library.applied(parts.unet, te, [NetworkSpec(name)]):
            alone[name] = genpix_outputs(parts, ids)[1]
    with NetworkLibrary(lora_dir).applied(parts.unet, te, [NetworkSpec("b")]):
        assert torch.equal(genpix_outputs(parts, ids)[1], alone["b"])
    results = {}

    def run(name: str) -> None:
        for _ in range(3):
            with library.applied(parts.unet, te, [NetworkSpec(name)]):
                results.setdefault(name, []).append(genpix_outputs(parts, ids)[1])

    def plain() -> None:  # a request without LoRA waits for the others' weights to be restored
        for _ in range(3):
            with library.applied(parts.unet, te, []):
                results.setdefault("plain", []).append(genpix_outputs(parts, ids)[1])

    alone["plain"] = genpix_outputs(parts, ids)[1]
    threads = [threading.Thread(target=run, args=(n,)) for n in "ab"] + [threading.Thread(target=plain)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name in ("a", "b", "plain"):
        assert len(results[name]) == 3 and all(torch.equal(r, alone[name]) for r in results[name])


def test_extra_networks_entry_point(sd1, tmp_path):
    """ExtraNetworks.activate: tags out of both prompts, the LoRA applied inside, Lora hashes noted;
    embedding tables for the encoder's width; a wrong-width embedding named in a prompt is an error."""
    from genpix.pipelines.extra_networks import ExtraNetworks

    ref, folder = sd1
    (tmp_path / "Lora").mkdir()
    save_file(kohya_lora(ref), str(tmp_path / "Lora" / "style.safetensors"))
    (tmp_path / "embeddings").mkdir()
    save_file({"emb_params": torch.randn(2, 128)}, str(tmp_path / "embeddings" / "zorb.safetensors"))
    save_file({"emb_params": torch.randn(1, 768)}, str(tmp_path / "embeddings" / "wide-one.safetensors"))
    parts = genpix_parts(folder)
    networks = ExtraNetworks(tmp_path / "Lora", tmp_path / "embeddings")
    modules = {"unet": parts.unet, "text_encoder": parts.text_model}
    ids = prompt_ids(parts)
    plain = genpix_outputs(parts, ids)
    with networks.activate("a zorb <lora:style:0.5>", "blurry", modules) as active:
        changed = genpix_outputs(parts, ids)
    assert (active.prompt, active.negative_prompt) == ("a zorb ", "blurry")
    assert active.notes == {"Lora hashes": f'"style: {short_hash(tmp_path / "Lora" / "style.safetensors")}"'}
    assert not torch.allclose(changed[1], plain[1]) and torch.equal(genpix_outputs(parts, ids)[1], plain[1])
    counts, vectors = networks.embedding_tables("", 128)
    assert counts == {"zorb": 2} and vectors["zorb"].shape == (2, 128)
    networks.check_embeddings("a zorb", {"": 128})
    with pytest.raises(ExtraNetworkError, match=r"embedding 'wide-one' \(width 768\) does not fit .*\(width 128\)"):
        networks.check_embeddings("a photo, wide-one style", {"": 128})


def test_alias_names_a_lora(sd1, tmp_path):
    """<lora:ALIAS:w> finds the file whose ss_output_name is ALIAS (sd-webui's alias)."""
    ref, _ = sd1
    (tmp_path / "Lora").mkdir()
    save_file(kohya_lora(ref), str(tmp_path / "Lora" / "file_v3.safetensors"), metadata={"ss_output_name": "pretty"})
    library = NetworkLibrary(tmp_path / "Lora")
    assert library.find("pretty") == tmp_path / "Lora" / "file_v3.safetensors"
    assert library.find("file_v3") == tmp_path / "Lora" / "file_v3.safetensors"


def test_peft_dora_matches_diffusers_fused(sd1, tmp_path):
    """PEFT / diffusers DoRA (lora_A, lora_B, lora_magnitude_vector per output row) at weight 1:
    genpix's merge equals diffusers' fuse_lora (where sd-webui's multiplier and PEFT's scale agree)."""
    import copy

    ref, folder = sd1
    g = torch.Generator().manual_seed(0)
    state = {}
    for name, module in ref.unet.named_modules():
        if name.endswith(("attn1.to_q", "attn2.to_v", "ff.net.2")):
            w = module.weight
            state[f"unet.{name}.lora_A.weight"] = torch.randn(2, w.shape[1], generator=g) * 0.3
            state[f"unet.{name}.lora_B.weight"] = torch.randn(w.shape[0], 2, generator=g) * 0.3
            state[f"unet.{name}.lora_magnitude_vector"] = w.norm(dim=1) * (1 + torch.rand(w.shape[0], generator=g))
    (tmp_path / "Lora").mkdir()
    save_file(state, str(tmp_path / "Lora" / "dora.safetensors"))
    pipe = copy.deepcopy(ref)
    pipe.load_lora_weights(str(tmp_path / "Lora"), weight_name="dora.safetensors")
    pipe.fuse_lora(lora_scale=1.0, components=["unet"])
    parts = genpix_parts(folder)
    ids = prompt_ids(parts)
    expected = reference_outputs(pipe, ids)
    assert (expected[1] - reference_outputs(ref, ids)[1]).abs().max() > 1e-3
    with NetworkLibrary(tmp_path / "Lora").applied(parts.unet, {"lora_te_": parts.text_model}, [NetworkSpec("dora")]):
        got = genpix_outputs(parts, ids)
    torch.testing.assert_close(got[1], expected[1], atol=ATOL, rtol=1e-4)


def test_dyn_keeps_the_first_ranks(sd1, tmp_path):
    """<lora:NAME:1:1:2>: W += alpha / r * B[:, :2] A[:2] (sd-webui's dyn_dim; the scale of the whole rank)."""
    _, folder = sd1
    parts, module, w, down, up = one_layer_lora(folder, tmp_path, "d", 4, 2.0, 2)
    _, specs = parse_prompt_networks("<lora:d:0.5:0.5:2>")
    assert specs == [NetworkSpec("d", 0.5, 0.5, 2)]
    with NetworkLibrary(tmp_path / "Lora").applied(parts.unet, {}, specs):
        torch.testing.assert_close(module.weight, w + 0.5 * 2.0 / 4 * up[:, :2] @ down[:2], atol=1e-5, rtol=1e-5)
    with pytest.raises(ExtraNetworkError, match="dyn 'x' in <lora:d:1:1:x> is not a positive whole number"):
        parse_prompt_networks("<lora:d:1:1:x>")
