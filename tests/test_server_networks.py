"""/sdapi/v1/loras, /refresh-loras, /embeddings, /refresh-embeddings in sd-webui's shapes."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient
from safetensors.torch import save_file
from test_sd_pipeline import vocab  # noqa: F401  (the vocab fixture)

from genpix.server.networks import build_networks_router, text_encoder_widths


def fake_pipeline(*widths: int):
    modules = tuple((name, SimpleNamespace(config=SimpleNamespace(hidden_size=w)))
                    for name, w in zip(("text_encoder", "text_encoder_2"), widths))
    return SimpleNamespace(parts=SimpleNamespace(modules=(("unet", object()), *modules)))


def client(tmp_path, pipe) -> TestClient:
    app = FastAPI()
    app.include_router(build_networks_router(lambda: pipe, tmp_path / "Lora", tmp_path / "embeddings"))
    return TestClient(app)


def test_loras_listing_and_refresh(tmp_path):
    (tmp_path / "Lora" / "styles").mkdir(parents=True)
    key = "lora_unet_x"
    save_file({f"{key}.lora_down.weight": torch.zeros(2, 4), f"{key}.lora_up.weight": torch.zeros(4, 2)},
              str(tmp_path / "Lora" / "styles" / "ink.safetensors"),
              metadata={"ss_output_name": "ink-v2", "ss_tag_frequency": '{"a": {"ink": 3}}', "ss_network_dim": "2"})
    api = client(tmp_path, fake_pipeline(768))
    items = api.get("/sdapi/v1/loras").json()
    assert items == [{"name": "ink", "alias": "ink-v2", "path": str(tmp_path / "Lora" / "styles" / "ink.safetensors"),
                      "metadata": {"ss_output_name": "ink-v2", "ss_tag_frequency": {"a": {"ink": 3}},
                                   "ss_network_dim": "2"}}]
    save_file({f"{key}.lora_down.weight": torch.zeros(2, 4)}, str(tmp_path / "Lora" / "more.safetensors"))
    assert api.post("/sdapi/v1/refresh-loras").status_code == 200
    assert [i["name"] for i in api.get("/sdapi/v1/loras").json()] == ["more", "ink"]


def test_embeddings_loaded_and_skipped_for_the_current_model(tmp_path):
    folder = tmp_path / "embeddings"
    folder.mkdir()
    torch.save({"string_to_param": {"*": torch.randn(2, 768)}, "step": 300, "sd_checkpoint": "1a2b",
                "sd_checkpoint_name": "v1-5"}, folder / "sd1style.pt")
    save_file({"emb_params": torch.randn(4, 1024)}, str(folder / "sd2style.safetensors"))
    save_file({"clip_l": torch.randn(1, 768), "clip_g": torch.randn(1, 1280)}, str(folder / "xlstyle.safetensors"))
    answer = client(tmp_path, fake_pipeline(768)).get("/sdapi/v1/embeddings").json()
    assert answer["loaded"] == {"sd1style": {"step": 300, "sd_checkpoint": "1a2b", "sd_checkpoint_name": "v1-5",
                                             "shape": 768, "vectors": 2}}
    assert set(answer["skipped"]) == {"sd2style", "xlstyle"} and answer["skipped"]["xlstyle"]["shape"] == 2048
    xl = client(tmp_path, fake_pipeline(768, 1280))
    assert set(xl.get("/sdapi/v1/embeddings").json()["loaded"]) == {"xlstyle"}
    assert xl.post("/sdapi/v1/refresh-embeddings").status_code == 200
    assert text_encoder_widths(SimpleNamespace()) is None


def test_app_serves_the_loras_route(tmp_path, monkeypatch):
    """create_app answers /loras from models/Lora (the constant [] route is gone)."""
    from genpix.server.app import create_app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "Lora").mkdir(parents=True)
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(1, 1)}, str(tmp_path / "models" / "Lora" / "a.safetensors"))
    api = TestClient(create_app(), base_url="http://127.0.0.1")
    assert [i["name"] for i in api.get("/sdapi/v1/loras").json()] == ["a"]


def test_txt2img_applies_a_lora_tag_from_models_lora(tmp_path, monkeypatch, vocab):  # noqa: F811
    """POST /sdapi/v1/txt2img with <lora:NAME:W> in the prompt: applied from models/Lora (sd-webui's
    folder, relative to where the server runs), infotext with Lora hashes; the next request without
    the tag gives the plain image; an unknown name is a 4xx naming it."""
    import base64
    import json

    from test_lora import kohya_lora
    from test_sd_pipeline import tiny_diffusers

    from genpix.server.app import create_app

    ref = tiny_diffusers(tmp_path, vocab, "sd1")
    ref.save_pretrained(tmp_path / "models" / "tiny-sd")
    (tmp_path / "models" / "Lora").mkdir()
    save_file(kohya_lora(ref), str(tmp_path / "models" / "Lora" / "ink.safetensors"))
    monkeypatch.chdir(tmp_path)
    api = TestClient(create_app(models_dir=tmp_path / "models", model="tiny-sd"), base_url="http://127.0.0.1")
    body = {"prompt": "a horse", "steps": 2, "width": 32, "height": 32, "seed": 1, "sampler_name": "Euler"}
    plain = api.post("/sdapi/v1/txt2img", json=body).json()
    styled = api.post("/sdapi/v1/txt2img", json={**body, "prompt": "a horse <lora:ink:0.8>"}).json()
    again = api.post("/sdapi/v1/txt2img", json=body).json()
    assert "Lora hashes" in json.loads(styled["info"])["infotexts"][0]
    assert styled["images"][0] != plain["images"][0] and again["images"][0] == plain["images"][0]
    assert base64.b64decode(plain["images"][0])[:4] == b"\x89PNG"
    bad = api.post("/sdapi/v1/txt2img", json={**body, "prompt": "a horse <lora:inc:1>"})
    assert 400 <= bad.status_code < 500 and "no LoRA named 'inc'" in bad.text


def test_serve_lora_dir_and_the_cli_flags(tmp_path, vocab, run_cli):  # noqa: F811
    """--lora-dir: the server lists and applies LoRAs from that folder, not from models/Lora."""
    import json

    from test_lora import kohya_lora
    from test_sd_pipeline import tiny_diffusers

    from genpix.cli import build_parser
    from genpix.server.app import create_app

    ref = tiny_diffusers(tmp_path, vocab, "sd1")
    ref.save_pretrained(tmp_path / "models" / "tiny-sd")
    (tmp_path / "my-loras").mkdir()
    save_file(kohya_lora(ref), str(tmp_path / "my-loras" / "ink.safetensors"))
    api = TestClient(create_app(models_dir=tmp_path / "models", model="tiny-sd", lora_dir=tmp_path / "my-loras"),
                     base_url="http://127.0.0.1")
    assert [item["name"] for item in api.get("/sdapi/v1/loras").json()] == ["ink"]
    body = {"prompt": "a horse <lora:ink:0.8>", "steps": 2, "width": 32, "height": 32, "seed": 1}
    answer = api.post("/sdapi/v1/txt2img", json=body)
    assert answer.status_code == 200 and "Lora hashes" in json.loads(answer.json()["info"])["infotexts"][0]
    args = build_parser().parse_args(["serve", "--lora-dir", "L", "--embeddings-dir", "E"])
    assert (args.lora_dir, args.embeddings_dir) == ("L", "E")
