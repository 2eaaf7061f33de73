"""Training speed: batched triplet mining vs the report's per-sample scheme, and GAN images per second.

    python bench/train_speed.py --data data/starter                 # encoder part needs a corpus
    python bench/train_speed.py --skip-encoder                      # GAN part only (synthetic tensors)
    python bench/train_speed.py --data data/starter --encoder-epochs 3 --gan-steps 10

Encoder: trains stage 1 with `--sampling paper` (the report's batch-1 scheme) for --encoder-epochs and with
batch-hard and semi-hard mining for --encoder-epochs x --batched-factor epochs, each at its own default learning
rate (train.config.SAMPLING_DEFAULTS: the report's 5e-5 for paper, 1e-3 batched), and prints seconds per epoch
(training steps only, from metrics.jsonl), the ratio, the held-out nearest-centroid accuracy after the same
number of epochs, and how much sooner batched mining first reaches the accuracy the report's scheme ends at.
GAN: times the real training step (D update + G update, the recipe's losses and
augmentation) for each recipe at the CPU and REPORT presets on random tensors, and prints images/s.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mvnet import ERAS  # noqa: E402
from mvnet.models import Discriminator, Generator  # noqa: E402
from train.augment import parse_policy  # noqa: E402
from train.config import EncoderStageConfig, GanStageConfig  # noqa: E402
from train.gan_stage import _train_step, recipe_models, uses_eras  # noqa: E402


def encoder_epochs(data: str, epochs: int, batched_factor: int, cache_dir: str | None) -> dict:
    from train.encoder_stage import train_encoder
    from train.runs import read_metrics

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for sampling in ("paper", "batch-hard", "semi-hard"):
            run = Path(tmp) / sampling
            n = epochs if sampling == "paper" else epochs * batched_factor
            cfg = EncoderStageConfig(data_root=data, run_dir=str(run), epochs=n, sampling=sampling,
                                     cache_dir=cache_dir, checkpoint_every=0).resolved()
            train_encoder(cfg)
            rows = [r for r in read_metrics(run) if r["kind"] == "epoch"]
            seconds = [r["epoch_seconds"] for r in rows]
            accuracy = [r["heldout_accuracy"] for r in rows]
            out[sampling] = {"lr": cfg.lr, "seconds_per_epoch": sum(seconds) / len(seconds),
                             "steps_per_epoch": rows[-1]["step"] // n, "heldout_accuracy_per_epoch": accuracy,
                             "seconds_per_epoch_each": seconds}
            print(f"encoder {sampling:10} (lr {cfg.lr:g}): {out[sampling]['seconds_per_epoch']:7.1f} s/epoch "
                  f"({out[sampling]['steps_per_epoch']} steps), held-out accuracy by epoch "
                  f"{', '.join(f'{a:.3f}' for a in accuracy)}", flush=True)
    paper = out["paper"]
    target, paper_seconds = paper["heldout_accuracy_per_epoch"][-1], sum(paper["seconds_per_epoch_each"])
    for batched in ("batch-hard", "semi-hard"):
        b = out[batched]
        ratio = paper["seconds_per_epoch"] / b["seconds_per_epoch"]
        same_epochs = b["heldout_accuracy_per_epoch"][epochs - 1]
        reached = next((i for i, a in enumerate(b["heldout_accuracy_per_epoch"]) if a >= target), None)
        b.update(ratio_per_epoch=ratio, heldout_accuracy_after_paper_epochs=same_epochs)
        print(f"encoder: {batched} is {ratio:.1f}x faster per epoch (target >= 20x); after {epochs} epoch(s) "
              f"held-out accuracy {same_epochs:.3f} vs {target:.3f} for the report's sampling "
              f"({'equal or better' if same_epochs >= target else 'WORSE'})")
        if reached is None:
            print(f"encoder: {batched} never reached {target:.3f} in {len(b['heldout_accuracy_per_epoch'])} epochs")
        else:
            seconds = sum(b["seconds_per_epoch_each"][:reached + 1])
            b["time_to_paper_accuracy_ratio"] = paper_seconds / seconds
            print(f"encoder: {batched} reaches {target:.3f} after {reached + 1} epoch(s), {seconds:.0f} s: "
                  f"{paper_seconds / seconds:.1f}x sooner than the report's sampling ({paper_seconds:.0f} s)")
    return out


class _RandomPairs:
    """Stand-in for PaintingPairDataset: random images and pairs, same fields the training step reads."""

    def __init__(self, n: int = 512, clips: int = 128):
        self.images = torch.randint(0, 256, (n, 3, 64, 64), dtype=torch.uint8)
        self.pairs = torch.stack([torch.arange(n) % clips, torch.arange(n)], 1)


def gan_images_per_second(recipe: str, preset: str, steps: int) -> float:
    cfg = GanStageConfig(recipe=recipe, preset=preset).resolved()
    g_cfg, d_cfg = recipe_models(recipe, preset, uses_eras(cfg) * len(ERAS), bool(cfg.era_projection))
    torch.manual_seed(0)
    G, D = Generator(g_cfg), Discriminator(d_cfg)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=cfg.betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=cfg.betas)
    pairs = _RandomPairs()
    emb, spread = torch.randn(128, g_cfg.embedding_dim), torch.ones(g_cfg.embedding_dim)
    labels = torch.arange(128) % len(ERAS)
    policy = parse_policy(cfg.diffaugment)
    device = torch.device("cpu")

    def step():
        items = torch.randint(0, 2 * len(pairs.pairs), (cfg.batch_size,))
        _train_step(cfg, items, pairs, emb, labels, spread, G, D, G, D, opt_g, opt_d, policy, d_cfg.conditional,
                    device)

    step()  # warm-up
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * cfg.batch_size / (time.perf_counter() - started)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/starter")
    p.add_argument("--cache-dir")
    p.add_argument("--encoder-epochs", type=int, default=1, help="epochs of the report's sampling")
    p.add_argument("--batched-factor", type=int, default=3, help="batched mining trains this many times longer")
    p.add_argument("--gan-steps", type=int, default=5)
    p.add_argument("--skip-encoder", action="store_true")
    p.add_argument("--skip-report-preset", action="store_true", help="REPORT-size GAN is slow on CPU")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CUDA {torch.cuda.is_available()}")
    figures = {}
    if not args.skip_encoder:
        figures["encoder"] = encoder_epochs(args.data, args.encoder_epochs, args.batched_factor, args.cache_dir)
    figures["gan_images_per_second"] = {}
    for preset in ("cpu",) + (() if args.skip_report_preset else ("report",)):
        for recipe in ("ours", "paper"):
            ips = gan_images_per_second(recipe, preset, args.gan_steps)
            figures["gan_images_per_second"][f"{preset}/{recipe}"] = ips
            print(f"GAN preset {preset:6} recipe {recipe:5}: {ips:6.1f} images/s (training, D + G step)", flush=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
