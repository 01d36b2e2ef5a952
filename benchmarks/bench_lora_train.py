"""One LoRA training step (``genpix train lora``'s LoRATask) on Stable Diffusion 1.5 shapes, random weights.

SD 1.5's U-Net (859.5M parameters), CLIP ViT-L/14 text encoder and KL autoencoder, frozen; LoRA of
rank ``--rank`` on sd-scripts' default targets (every linear layer of the U-Net's transformers and of
the text encoder's attention and MLP); batch 1 at ``--size``; AdamW. Reports the median step time
of ``--steps`` steps after one warm-up step, and the process's peak resident memory.

    GENPIX_THREADS=1 python benchmarks/bench_lora_train.py --size 256 --steps 2
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import torch

from genpix.device import set_cpu_threads
from genpix.io.sd_loader import SDComponents
from genpix.models.autoencoder import AutoencoderConfig, AutoencoderKL
from genpix.models.sd_unet import SD1, SDUNet
from genpix.models.text import CLIPTextConfig, CLIPTextModel
from genpix.models.tokenizer import CLIPTokenizer
from genpix.training.batches import batch_noise_seed
from genpix.training.lora import LoRATask, LoRATrainingConfig
from genpix.training.task import Batch

SD_VAE = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4, sample_size=512)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    set_cpu_threads()
    torch.manual_seed(0)
    vocab = {f"w{i}</w>": i for i in range(49406)} | {"<|startoftext|>": 49406, "<|endoftext|>": 49407}
    tokenizer = CLIPTokenizer(vocab, [])
    parts = SDComponents(tokenizer, CLIPTextModel(CLIPTextConfig.sd1()), SDUNet(SD1),
                         AutoencoderKL(AutoencoderConfig(**SD_VAE)), torch.linspace(0.999, 0.005, 1000), "eps", "bench")
    config = LoRATrainingConfig(base="random SD 1.5 shapes", rank=args.rank, alpha=args.rank, image_size=args.size)
    task = LoRATask(config, lr=1e-4, device=torch.device("cpu"), parts=parts)
    g = torch.Generator()
    times = []
    for step in range(args.steps + 1):
        batch = Batch(torch.rand(1, 3, args.size, args.size), None, ["w1 w2 w3 w4 w5"],
                      generator=g.manual_seed(batch_noise_seed(0, step)))
        tic = time.perf_counter()
        task.train_step(batch)
        times.append(time.perf_counter() - tic)
    result = {"size": args.size, "rank": args.rank, "threads": torch.get_num_threads(),
              "lora_parameters": sum(p.numel() for p in task.network.parameters()),
              "step_s": statistics.median(times[1:]), "first_step_s": times[0],
              "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
