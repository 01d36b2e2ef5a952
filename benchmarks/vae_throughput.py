"""VAE training throughput: images/s of genpix's trainer against a bare PyTorch loop.

Both run the same network, optimiser and batches in the same process; the ratio shows what the
shared trainer (data indexing, per-step seeding, logging, NaN checks, and the one checkpoint and
sample grid written at the end of each window) costs. Reports medians of
timed windows after a warm-up.

    GENPIX_THREADS=2 python benchmarks/vae_throughput.py --latent-dims 2 16 --batch-size 128
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch

from genpix.data import load_dataset
from genpix.device import set_cpu_threads
from genpix.models.vae import VAE, VAEConfig
from genpix.training.trainer import TrainConfig, Trainer
from genpix.training.vae import VAETask


def bare_loop(data, config: VAEConfig, batch_size: int, steps: int) -> float:
    torch.manual_seed(0)
    vae = VAE(config)
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    x_all = data.images.float() / 255
    tic = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(0, len(data), (batch_size,))
        loss = vae.loss(x_all[idx])["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * batch_size / (time.perf_counter() - tic)


def trainer_loop(data, config: VAEConfig, batch_size: int, steps: int) -> float:
    torch.manual_seed(0)
    task = VAETask(config, lr=1e-3, device=torch.device("cpu"))
    train = TrainConfig(steps=steps, batch_size=batch_size, sample_every=10**9, checkpoint_every=10**9)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(task, train, out, device=torch.device("cpu"), run_config={}, progress=False)
        tic = time.perf_counter()
        trainer.fit(data)
        return steps * batch_size / (time.perf_counter() - tic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latent-dims", type=int, nargs="+", default=[2, 16])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=60, help="steps per timed window")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    threads = set_cpu_threads()
    data = load_dataset("fashion-mnist", split="train", limit=20000)
    rows = []
    for latent_dim in args.latent_dims:
        config = VAEConfig(latent_dim=latent_dim)
        bare_loop(data, config, args.batch_size, 10)  # warm-up
        genpix, bare = [], []
        for _ in range(args.repeats):  # interleaved, so drift hits both alike
            genpix.append(trainer_loop(data, config, args.batch_size, args.steps))
            bare.append(bare_loop(data, config, args.batch_size, args.steps))
        row = {"latent_dim": latent_dim, "batch_size": args.batch_size, "threads": threads,
               "genpix_images_per_s": round(statistics.median(genpix), 1),
               "bare_pytorch_images_per_s": round(statistics.median(bare), 1),
               "ratio": round(statistics.median(genpix) / statistics.median(bare), 3)}
        rows.append(row)
        print(json.dumps(row))


if __name__ == "__main__":
    main()
