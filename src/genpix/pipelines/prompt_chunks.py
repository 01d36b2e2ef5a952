"""Prompts of any length, weighted, as sd-webui encodes them for SD 1.x/2.x.

A port of sd-webui's ``TextConditionalModel`` (AUTOMATIC1111/stable-diffusion-webui,
modules/sd_hijack_clip.py, ``tokenize_line``, ``forward``, ``process_tokens``) with its "Original"
emphasis (modules/sd_emphasis.py):

1. the prompt is split into weighted runs (pipelines/prompt_weighting.py) and each run tokenized
   on its own, without bos/eos;
2. the tokens fill chunks of 75; a full chunk starts the next one, and when the chunk fills within
   ``comma_backtrack`` (sd-webui's "Prompt word wrap length limit", default 20) tokens after a
   comma, the tokens after that comma move to the next chunk; ``BREAK`` closes the chunk early;
3. each chunk is ``bos + 75 tokens + eos``, short chunks padded with eos (SD 1.x) or, after the
   first eos, with the tokenizer's pad id ("!" = 0 for SD 2.x, as process_tokens does);
4. each chunk is encoded by the text model on its own, (1, 77, D); its token embeddings z are
   multiplied by their weights and rescaled so that the chunk's mean is z's mean again:
   z' = z w * mean(z) / mean(z w) (EmphasisOriginal.after_transformers; all weights 1 leave z as it is);
5. the chunks are concatenated along the sequence: (1, 77 k, D) for k chunks.

A prompt of at most 75 tokens without emphasis is one chunk identical to diffusers' (1, 77, D)
input: bos, tokens, eos, padding. Textual-inversion embeddings are not supported.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genpix.models.text import CLIPTextModel
from genpix.models.tokenizer import CLIPTokenizer
from genpix.pipelines.prompt_weighting import BREAK, BREAK_WEIGHT, parse_prompt_attention

COMMA_BACKTRACK = 20  # sd-webui's opts.comma_padding_backtrack default


@dataclass(frozen=True)
class PromptChunk:
    """One chunk: token ids and weights, both ``chunk_length + 2`` long (bos ... eos, padding)."""

    ids: tuple[int, ...]
    weights: tuple[float, ...]


def chunk_prompt(tokenizer: CLIPTokenizer, prompt: str, *, length: int = 77,
                 comma_backtrack: int = COMMA_BACKTRACK) -> list[PromptChunk]:
    """The prompt's chunks of ``length`` ids (75 prompt tokens with bos and eos), as sd-webui's
    tokenize_line; an empty prompt is one chunk."""
    size = length - 2
    comma = tokenizer.encoder.get(",</w>")
    chunks: list[PromptChunk] = []
    tokens: list[int] = []
    weights: list[float] = []
    last_comma = -1

    def next_chunk() -> None:
        nonlocal tokens, weights, last_comma
        fill = size - len(tokens)
        ids = [tokenizer.bos_id, *tokens, tokenizer.eos_id] + [tokenizer.pad_id] * fill
        chunks.append(PromptChunk(tuple(ids), (1.0, *weights, 1.0) + (1.0,) * fill))
        tokens, weights, last_comma = [], [], -1

    for text, weight in parse_prompt_attention(prompt):
        if (text, weight) == (BREAK, BREAK_WEIGHT):
            next_chunk()
            continue
        for token in (tokenizer.encoder.get(s, tokenizer.unk_id) for s in tokenizer.tokenize(text)):
            if token == comma:
                last_comma = len(tokens)
            elif (comma_backtrack and len(tokens) == size and last_comma != -1
                  and len(tokens) - last_comma <= comma_backtrack):
                moved, moved_weights = tokens[last_comma + 1:], weights[last_comma + 1:]
                tokens, weights = tokens[:last_comma + 1], weights[:last_comma + 1]
                next_chunk()
                tokens, weights = moved, moved_weights
            if len(tokens) == size:
                next_chunk()
            tokens.append(token)
            weights.append(weight)
    if tokens or not chunks:
        next_chunk()
    return chunks


def empty_chunk(tokenizer: CLIPTokenizer, length: int = 77) -> PromptChunk:
    """sd-webui's empty_chunk: bos, eos, then padding (eos for SD 1.x, the pad id after the first
    eos for SD 2.x, as process_tokens makes it); weights 1. The empty prompt's only chunk."""
    return PromptChunk((tokenizer.bos_id, tokenizer.eos_id) + (tokenizer.pad_id,) * (length - 2), (1.0,) * length)


def encode_chunks(text_model: CLIPTextModel, chunks: list[PromptChunk], *, clip_skip: int = 0,
                  final_norm: bool = True) -> torch.Tensor:
    """(1, 77 k, D): each chunk through the text model on its own (``clip_skip`` and ``final_norm``
    as CLIPTextModel's: 0 is the last layer), weighted with the mean restored, concatenated."""
    device = text_model.text_model.embeddings.token_embedding.weight.device
    parts = []
    for chunk in chunks:
        z = text_model(torch.tensor([chunk.ids], device=device), clip_skip=clip_skip,
                       final_norm=final_norm).tokens  # (1, 77, D)
        parts.append(emphasize(z, chunk.weights))
    return torch.cat(parts, dim=1)


def emphasize(z: torch.Tensor, weights: tuple[float, ...]) -> torch.Tensor:
    """sd-webui's "Original" emphasis on one chunk's embeddings z (1, 77, D): z w, rescaled so its
    mean is z's mean again; all weights 1 leave z as it is."""
    if all(w == 1.0 for w in weights):
        return z
    original_mean = z.mean()
    z = z * torch.tensor(weights, dtype=z.dtype, device=z.device)[None, :, None]
    return z * (original_mean / z.mean())
