"""How far the frozen MiniLM encoder carries a colour synonym to its basic colour, before any training.

A model conditioned on MiniLM can draw "crimson" as red only as far as MiniLM puts "crimson" near
"red". For every synonym of `emoji_prompts.py` (40 of them, 9 basic colours) this finds the nearest
of the 9 basic colour words, by cosine similarity, in three of MiniLM's spaces: its input word-piece
embeddings (mean over the word's pieces), the pooled sentence vector of the bare word, and the pooled
vector of every benchmark prompt against the same prompt with each basic word in the synonym's place.
The share that lands on the right colour is a rough ceiling for any model trained only on basic colour
words with this encoder.

A model trained on the lexicon's names (`emoji-colour-names`) can learn more than nearness: the second
table trains a linear probe (softmax regression, AdamW, 2000 full-batch steps) from MiniLM's masked mean
token state of "a {name} {object}" (six objects, averaged) to the basic colour of the name's RGB, on the
848 training names, and scores it on the held-out names and on the benchmark's synonyms. It asks
whether the frozen encoder's states carry a name's colour at all; a model scoring far below it on the
names it was trained on is underfit rather than starved of signal.

    GENPIX_THREADS=1 python benchmarks/colour_word_probe.py
"""

from __future__ import annotations

import torch
from emoji_prompts import SYNONYMS, prompts

from genpix.data.colour_lexicon import colour_lexicon
from genpix.device import set_cpu_threads
from genpix.models.text import SentenceEncoder

BASIC = list(SYNONYMS)
PROBE_OBJECTS = ("heart", "frog", "circle", "apple", "star", "cat")


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


def name_states(encoder: SentenceEncoder, names: list[str]) -> torch.Tensor:
    """Masked mean of the token states of "a {name} {object}", averaged over PROBE_OBJECTS."""
    rows = []
    for name in names:
        out = encoder([f"a {name} {o}" for o in PROBE_OBJECTS])
        mask = out.mask.float()[..., None]
        rows.append(((out.tokens * mask).sum(1) / mask.sum(1)).mean(0))
    return torch.stack(rows)


def linear_probe(encoder: SentenceEncoder) -> list[tuple[str, float]]:
    """Accuracy of a softmax probe from `name_states` to the basic colour, trained on the training names."""
    lexicon = colour_lexicon()
    labels = sorted({c.basic for c in lexicon})
    sets = {"training names": [c for c in lexicon if not c.held_out],
            "held-out names": [c for c in lexicon if c.held_out]}
    with torch.no_grad():
        data = {k: (name_states(encoder, [c.name for c in v]), torch.tensor([labels.index(c.basic) for c in v]))
                for k, v in sets.items()}
        synonyms = [(s, c) for c, group in SYNONYMS.items() for s in group]
        data["benchmark synonyms"] = (name_states(encoder, [s for s, _ in synonyms]),
                                      torch.tensor([labels.index(c) for _, c in synonyms]))
    x, y = data["training names"]
    mean, std = x.mean(0), x.std(0) + 1e-6
    torch.manual_seed(0)
    probe = torch.nn.Linear(x.shape[1], len(labels))
    opt = torch.optim.AdamW(probe.parameters(), 1e-3, weight_decay=1e-2)
    for _ in range(2000):
        loss = torch.nn.functional.cross_entropy(probe((x - mean) / std), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return [(f"{k} ({len(yk)})", (probe((xk - mean) / std).argmax(1) == yk).float().mean().item())
                for k, (xk, yk) in data.items()]


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
    print("\nlinear probe from MiniLM token states to the basic colour, trained on the training names\n")
    print("| names | probe accuracy |\n|---|---|")
    for name, share in linear_probe(encoder):
        print(f"| {name} | {share:.2f} |")


if __name__ == "__main__":
    main()
