"""Sampling a class-conditional model without a class: every picture's class drawn from the prior.

A class-conditional diffusion model trained with label dropout also has a null class (Ho and
Salimans 2022, classifier-free guidance), but it learns p(x) from only the dropped share of the
batches (10% in genpix's recipes) and draws weaker, less varied pictures than any class. The
marginal p(x) = sum_c p(c) p(x | c) is sampled better ancestrally: c_i ~ p(c), then x_i ~ p(x | c_i)
with the class's own network. p(c) is uniform over the model's classes (the class-balanced datasets
genpix trains on); picture i's class is drawn from its own seed, so it never depends on the batch.
``--class null`` (class_name NULL_CLASS) still asks for the null class.
"""

from __future__ import annotations

import random
from dataclasses import replace

import torch

from . import modes
from .output import PipelineOutput
from .request import GenerationRequest

NULL_CLASS = "null"  # the word that asks for the null class itself


def class_of_seed(seed: int, classes: int) -> int:
    """The class c ~ U{0..classes-1} of the picture drawn from ``seed``."""
    return random.Random(seed).randrange(classes)


def wants_class_prior(pipe, request: GenerationRequest) -> bool:
    """True for a class-conditional diffusion model asked for no class: neither ``class_name`` (None; "null" asks
    for the null class) nor a prompt (a class model reads its prompt as a class name)."""
    caps = pipe.capabilities  # GANs draw class (seed + i) mod K themselves (pipelines/latent_decoder.py)
    return (caps.diffusion and caps.conditioning == "class" and bool(caps.class_names) and request.class_name is None
            and not request.prompt)


def with_null_class(request: GenerationRequest) -> GenerationRequest:
    """``class_name`` "null" (any case) -> "" (the pipelines' null class)."""
    named = isinstance(request.class_name, str) and request.class_name.strip().casefold() == NULL_CLASS
    return replace(request, class_name="") if named else request


def generate_with_prior(pipe, request: GenerationRequest, generate=None) -> PipelineOutput:
    """``request`` through ``generate`` (default ``pipe.generate``): "null" read as the null class, and
    a class-conditional diffusion model asked for no class sampled over the prior (`sample_class_prior`)."""
    request = with_null_class(request)
    if wants_class_prior(pipe, request):
        return sample_class_prior(pipe, request, generate)
    return (generate or pipe.generate)(request)


def sample_class_prior(pipe, request: GenerationRequest, generate=None) -> PipelineOutput:
    """``request`` (no class) with picture i of class `class_of_seed` (its seed): one call of
    ``generate`` (default ``pipe.generate``) per class drawn, the pictures back in seed order."""
    generate = generate or pipe.generate
    names = pipe.capabilities.class_names
    seeds, subseeds = modes.image_seeds(request)
    drawn = [class_of_seed(seed, len(names)) for seed in seeds]
    images, tensors, infotexts = [None] * request.n, [None] * request.n, [None] * request.n
    info: dict = {}
    for c in sorted(set(drawn)):
        index = [i for i, k in enumerate(drawn) if k == c]
        part = replace(request, class_name=names[c], n=len(index), seeds=tuple(seeds[i] for i in index),
                       subseeds=tuple(subseeds[i] for i in index),
                       latents=None if request.latents is None else request.latents[index])
        out = generate(part)
        info = info or dict(out.info)
        for j, i in enumerate(index):
            images[i], tensors[i], infotexts[i] = out.images[j], out.tensors[j], out.infotexts[j]
    info.update(seeds=seeds, subseeds=subseeds, classes=[names[k] for k in drawn], class_prior="uniform")
    return PipelineOutput(images, torch.stack(tensors), infotexts, info)
