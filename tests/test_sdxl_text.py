"""SDXL's text encoders against transformers (the oracle): OpenCLIP bigG as CLIPTextModelWithProjection
(penultimate hidden states without the final LayerNorm, the pooled eos vector through text_projection)
and the ViT-L tower's penultimate layer, on tiny random configs."""

from __future__ import annotations

import pytest
import torch
from test_text_encoders import TINY, prompt_ids

from genpix.models.text import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, TextEncoderError


def hf_projection_model(eos_token_id: int, projection_dim: int = 24):
    from transformers import CLIPTextConfig as HFConfig
    from transformers import CLIPTextModelWithProjection as HFModel

    torch.manual_seed(0)
    config = HFConfig(**TINY, hidden_act="gelu", eos_token_id=eos_token_id, bos_token_id=0, pad_token_id=1,
                      projection_dim=projection_dim)
    return HFModel(config).eval()


@pytest.mark.parametrize("eos", [2, 999], ids=["sdxl-config-eos2-argmax", "first-eos"])
def test_projection_model_matches_transformers(eos, tmp_path):
    """SDXL's text_encoder_2 config says eos_token_id 2: pooled at the largest id (the eos, since
    bigG pads with id 0 "!"), as open_clip's ``text.argmax(-1)``."""
    hf = hf_projection_model(eos)
    hf.save_pretrained(tmp_path / "text_encoder_2")
    ours = CLIPTextModelWithProjection.from_folder(tmp_path / "text_encoder_2")
    assert ours.text_projection.weight.shape == (24, 32)
    ids = prompt_ids(999, 0)  # eos 999 is the largest id; padding "!" = 0
    with torch.no_grad():
        want = hf(ids, output_hidden_states=True)
        got = ours(ids, clip_skip=1, final_norm=False)  # SDXL: hidden_states[-2], no final LayerNorm
        other = ours(ids, clip_skip=0)
    torch.testing.assert_close(got.tokens, want.hidden_states[-2], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.pooled, want.text_embeds, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(other.tokens, want.last_hidden_state, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(other.pooled, want.text_embeds, rtol=1e-5, atol=1e-5)  # pooled: always the last layer


def test_vit_l_penultimate_layer_without_final_norm_matches_transformers():
    from transformers import CLIPTextConfig as HFConfig
    from transformers import CLIPTextModel as HFModel

    torch.manual_seed(1)
    tiny = {**TINY, "num_hidden_layers": 3}
    hf = HFModel(HFConfig(**tiny, hidden_act="quick_gelu", eos_token_id=999, bos_token_id=0, pad_token_id=999)).eval()
    ours = CLIPTextModel(CLIPTextConfig(**tiny, eos_token_id=999))
    ours.load_transformers_state_dict(hf.state_dict())
    ids = prompt_ids(999, 999)
    with torch.no_grad():
        want = hf(ids, output_hidden_states=True).hidden_states
        got = ours(ids, clip_skip=1, final_norm=False).tokens
        deeper = ours(ids, clip_skip=2, final_norm=False).tokens  # diffusers' SDXL clip_skip=1
    torch.testing.assert_close(got, want[-2], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(deeper, want[-3], rtol=1e-5, atol=1e-5)
    assert (got - hf.final_layer_norm(want[-2])).abs().max() > 1e-2  # the norm is really left out


def test_projection_weights_must_be_there():
    hf = hf_projection_model(2)
    state = {k: v for k, v in hf.state_dict().items() if k != "text_projection.weight"}
    with pytest.raises(TextEncoderError, match=r"missing \['text_projection.weight'\]"):
        CLIPTextModelWithProjection(CLIPTextConfig(**TINY, hidden_act="gelu", eos_token_id=2), 24) \
            .load_transformers_state_dict(state)
