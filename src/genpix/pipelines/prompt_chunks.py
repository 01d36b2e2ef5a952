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
input: bos, tokens, eos, padding.

Textual-inversion embeddings (io/embeddings.py) as sd-webui places them (``tokenize_line`` with
``EmbeddingDatabase.find_embedding_at_position``, ``EmbeddingsWithFixes``): where the token ids of
an embedding's name (its file stem, tokenized as the prompt is) appear, the longest match first,
its n vectors take n places of the chunk (placeholder id 0), never split across chunks (a new chunk
starts when they do not fit); at encoding, the token embeddings at those places are replaced by the
vectors, so each counts against the 75 like a token. Without explicit ``embeddings`` / ``vectors``
the running generation's are used (``extra_networks.activated``), and extra-network tags
(``<lora:...>``) are removed from the text first, as sd-webui does.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from genpix.models.text import CLIPTextModel
from genpix.models.tokenizer import CLIPTokenizer
from genpix.pipelines.extra_networks import active_networks, strip_tags
from genpix.pipelines.prompt_weighting import BREAK, BREAK_WEIGHT, parse_prompt_attention

COMMA_BACKTRACK = 20  # sd-webui's opts.comma_padding_backtrack default


@dataclass(frozen=True)
class PromptChunk:
    """One chunk: token ids and weights, both ``chunk_length + 2`` long (bos ... eos, padding)."""

    ids: tuple[int, ...]
    weights: tuple[float, ...]
    fixes: tuple[tuple[int, str], ...] = ()  # (position in ids, embedding name): its vectors go there


def embedding_lookup(tokenizer: CLIPTokenizer,
                     counts: Mapping[str, int]) -> dict[int, list[tuple[tuple[int, ...], str]]]:
    """First token id -> [(the name's ids, name)], longest first (sd-webui's ids_lookup)."""
    lookup: dict[int, list[tuple[tuple[int, ...], str]]] = {}
    for name in counts:
        ids = tuple(tokenizer.encoder.get(s, tokenizer.unk_id) for s in tokenizer.tokenize(name))
        if ids:
            lookup.setdefault(ids[0], []).append((ids, name))
    for entries in lookup.values():
        entries.sort(key=lambda entry: len(entry[0]), reverse=True)
    return lookup


def _embedding_at(lookup: dict, ids: list[int], position: int) -> tuple[tuple[int, ...], str] | None:
    for entry in lookup.get(ids[position], ()):
        if tuple(ids[position:position + len(entry[0])]) == entry[0]:
            return entry
    return None


def chunk_prompt(tokenizer: CLIPTokenizer, prompt: str, *, length: int = 77,
                 comma_backtrack: int = COMMA_BACKTRACK,
                 embeddings: Mapping[str, int] | None = None) -> list[PromptChunk]:
    """The prompt's chunks of ``length`` ids (75 prompt tokens with bos and eos), as sd-webui's
    tokenize_line; an empty prompt is one chunk. ``embeddings``: name -> its number of vectors."""
    size = length - 2
    comma = tokenizer.encoder.get(",</w>")
    prompt = strip_tags(prompt)  # <lora:...> tags are applied, not encoded (pipelines/extra_networks.py)
    used = None
    if embeddings is None and (activation := active_networks()) is not None:
        embeddings, used = activation.counts, activation.used  # the running generation's embeddings
    lookup = embedding_lookup(tokenizer, embeddings) if embeddings else {}
    chunks: list[PromptChunk] = []
    tokens: list[int] = []
    weights: list[float] = []
    fixes: list[tuple[int, str]] = []
    last_comma = -1

    def next_chunk() -> None:
        nonlocal tokens, weights, fixes, last_comma
        fill = size - len(tokens)
        ids = [tokenizer.bos_id, *tokens, tokenizer.eos_id] + [tokenizer.pad_id] * fill
        chunks.append(PromptChunk(tuple(ids), (1.0, *weights, 1.0) + (1.0,) * fill, tuple(fixes)))
        tokens, weights, fixes, last_comma = [], [], [], -1

    for text, weight in parse_prompt_attention(prompt):
        if (text, weight) == (BREAK, BREAK_WEIGHT):
            next_chunk()
            continue
        run = [tokenizer.encoder.get(s, tokenizer.unk_id) for s in tokenizer.tokenize(text)]
        position = 0
        while position < len(run):
            token = run[position]
            if token == comma:
                last_comma = len(tokens)
            elif (comma_backtrack and len(tokens) == size and last_comma != -1
                  and len(tokens) - last_comma <= comma_backtrack):
                moved, moved_weights = tokens[last_comma + 1:], weights[last_comma + 1:]
                moved_fixes = [(p - last_comma - 1, n) for p, n in fixes if p > last_comma]
                tokens, weights = tokens[:last_comma + 1], weights[:last_comma + 1]
                fixes = [(p, n) for p, n in fixes if p <= last_comma]
                next_chunk()
                tokens, weights, fixes = moved, moved_weights, moved_fixes
            if len(tokens) == size:
                next_chunk()
            found = _embedding_at(lookup, run, position) if lookup else None
            if found is None:
                tokens.append(token)
                weights.append(weight)
                position += 1
                continue
            count = embeddings[found[1]]
            if len(tokens) + count > size:
                next_chunk()
            fixes.append((len(tokens), found[1]))
            if used is not None:
                used.add(found[1])  # for the infotext's TI hashes
            tokens += [0] * count
            weights += [weight] * count
            position += len(found[0])
    if tokens or not chunks:
        next_chunk()
    return chunks


def empty_chunk(tokenizer: CLIPTokenizer, length: int = 77) -> PromptChunk:
    """sd-webui's empty_chunk: bos, eos, then padding (eos for SD 1.x, the pad id after the first
    eos for SD 2.x, as process_tokens makes it); weights 1. The empty prompt's only chunk."""
    return PromptChunk((tokenizer.bos_id, tokenizer.eos_id) + (tokenizer.pad_id,) * (length - 2), (1.0,) * length)


def encode_chunks(text_model: CLIPTextModel, chunks: list[PromptChunk], *, clip_skip: int = 0,
                  final_norm: bool = True, vectors: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
    """(1, 77 k, D): each chunk through the text model on its own (``clip_skip`` and ``final_norm``
    as CLIPTextModel's: 0 is the last layer), weighted with the mean restored, concatenated.
    ``vectors``: embedding name -> (n, D) for this text encoder, written over the chunks' fixes."""
    device = text_model.text_model.embeddings.token_embedding.weight.device
    parts = []
    for chunk in chunks:
        ids = torch.tensor([chunk.ids], device=device)
        with embedding_fixes(text_model, ids, chunk.fixes, vectors):
            z = text_model(ids, clip_skip=clip_skip, final_norm=final_norm).tokens  # (1, 77, D)
        parts.append(emphasize(z, chunk.weights))
    return torch.cat(parts, dim=1)


@contextmanager
def embedding_fixes(text_model: CLIPTextModel, ids: torch.Tensor, fixes: tuple[tuple[int, str], ...],
                    vectors: Mapping[str, torch.Tensor] | None = None) -> Iterator[None]:
    """Inside the block, ``text_model`` called on ``ids`` (this very tensor) embeds each fix's vectors
    at rows offset + 1 ... (after bos), sd-webui's EmbeddingsWithFixes; ``vectors`` default to the
    running generation's for this encoder's width. For encoders called directly (SDXL's bigG)."""
    if vectors is None and (activation := active_networks()) is not None:
        vectors = activation.vectors.get(text_model.config.hidden_size)
    if not fixes:
        yield
        return
    table = text_model.text_model.embeddings.token_embedding
    hook = table.register_forward_hook(_fix_rows(ids, fixes, vectors))
    try:
        yield
    finally:
        hook.remove()


def _fix_rows(ids: torch.Tensor, fixes: tuple[tuple[int, str], ...], vectors: Mapping[str, torch.Tensor] | None):
    """A token-embedding hook writing each fix's vectors at rows offset + 1 ... (after bos), for
    this call's ids only (sd-webui's EmbeddingsWithFixes)."""
    def hook(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if inputs[0] is not ids:
            return None
        output = output.clone()
        for offset, name in fixes:
            rows = vectors[name].to(output.device, output.dtype)
            output[0, offset + 1:offset + 1 + len(rows)] = rows
        return output
    return hook


def emphasize(z: torch.Tensor, weights: tuple[float, ...]) -> torch.Tensor:
    """sd-webui's "Original" emphasis on one chunk's embeddings z (1, 77, D): z w, rescaled so its
    mean is z's mean again; all weights 1 leave z as it is."""
    if all(w == 1.0 for w in weights):
        return z
    original_mean = z.mean()
    z = z * torch.tensor(weights, dtype=z.dtype, device=z.device)[None, :, None]
    return z * (original_mean / z.mean())
