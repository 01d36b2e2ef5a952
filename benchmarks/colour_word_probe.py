"""How far the frozen MiniLM encoder carries a colour synonym to its basic colour, before any training.

A model conditioned on MiniLM can draw "crimson" as red only as far as MiniLM puts "crimson" near
"red". For every synonym of `emoji_prompts.py` (40 of them, 9 basic colours) this finds the nearest
of the 9 basic colour words, by cosine similarity, in three of MiniLM's spaces: its input word-piece
embeddings (mean over the word's pieces), the pooled sentence vector of the bare word, and the pooled
vector of every benchmark prompt against the same prompt with each basic word in the synonym's place.
The share that lands on the right colour is a rough ceiling for any model trained only on basic colour
words with this encoder.

    GENPIX_THREADS=1 python benchmarks/colour_word_probe.py
"""

from __future__ import annotations

import torch
from emoji_prompts import SYNONYMS, prompts

from genpix.device import set_cpu_threads
from genpix.models.text import SentenceEncoder

BASIC = list(SYNONYMS)


def word_pieces(encoder: SentenceEncoder, words: list[str]) -> torch.Tensor:
    table = encoder.bert.embeddings.word_embeddings.weight
    rows = [table[encoder.tokenizer(w, add_special_tokens=False)["input_ids"]].mean(0) for w in words]
    return torch.nn.functional.normalize(torch.stack(rows), dim=1)


def pooled(encoder: SentenceEncoder, texts: list[str]) -> torch.Tensor:
    return torch.nn.functional.normalize(encoder(texts).pooled, dim=1)


def nearest_share(queries: torch.Tensor, keys: torch.Tensor, wanted: list[str]) -> float:
    picked = (queries @ keys.T).argmax(dim=1).tolist()
    return sum(BASIC[i] == w for i, w in zip(picked, wanted)) / len(wanted)


def in_context(encoder: SentenceEncoder) -> float:
    hits, cases = 0, prompts()
    for prompt, colour, _ in cases:
        synonym = next(s for s in SYNONYMS[colour] if s in prompt)
        vectors = pooled(encoder, [prompt] + [prompt.replace(synonym, b) for b in BASIC])
        hits += BASIC[int((vectors[1:] @ vectors[0]).argmax())] == colour
    return hits / len(cases)


def main() -> None:
    set_cpu_threads()
    encoder = SentenceEncoder()
    synonyms = [(s, c) for c, group in SYNONYMS.items() for s in group]
    words, wanted = [s for s, _ in synonyms], [c for _, c in synonyms]
    with torch.no_grad():
        rows = [("word-piece embeddings", nearest_share(word_pieces(encoder, words), word_pieces(encoder, BASIC), wanted)),
                ("pooled vector of the bare word", nearest_share(pooled(encoder, words), pooled(encoder, BASIC), wanted)),
                (f"pooled vector of the {len(prompts())} prompts", in_context(encoder))]
    print(f"{len(words)} synonyms of {len(BASIC)} basic colours: share nearest their own basic colour word\n")
    print("| MiniLM space | share |\n|---|---|")
    for name, share in rows:
        print(f"| {name} | {share:.2f} |")


if __name__ == "__main__":
    main()
