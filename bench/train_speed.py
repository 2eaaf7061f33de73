"""Training speed: batched triplet mining vs the report's per-sample scheme, and GAN images per second.

    python bench/train_speed.py --data data/starter                 # encoder part needs a corpus
    python bench/train_speed.py --skip-encoder                      # GAN part only (synthetic tensors)
    python bench/train_speed.py --data data/starter --encoder-epochs 3 --gan-steps 10

Encoder: trains stage 1 for --encoder-epochs with batch-hard and semi-hard mining and with `--sampling paper`
(the same lr for all three), and prints
seconds per epoch (training steps only, from metrics.jsonl), the ratio, and the held-out nearest-centroid
accuracy each reached. GAN: times the real training step (D update + G update, the recipe's losses and
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

from mvnet.models import Discriminator, Generator  # noqa: E402
from train.augment import parse_policy  # noqa: E402
from train.config import EncoderStageConfig, GanStageConfig  # noqa: E402
from train.gan_stage import _train_step, recipe_models  # noqa: E402


def encoder_epochs(data: str, epochs: int, cache_dir: str | None, lr: float) -> dict:
    from train.encoder_stage import train_encoder
    from train.runs import read_metrics

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for sampling in ("batch-hard", "semi-hard", "paper"):
            run = Path(tmp) / sampling
            cfg = EncoderStageConfig(data_root=data, run_dir=str(run), epochs=epochs, sampling=sampling,
                                     cache_dir=cache_dir, checkpoint_every=0, lr=lr)
            result = train_encoder(cfg)
            rows = [r for r in read_metrics(run) if r["kind"] == "epoch"]
            seconds = sum(r["epoch_seconds"] for r in rows) / len(rows)
            out[sampling] = {"seconds_per_epoch": seconds, "heldout_accuracy": result.metrics["heldout_accuracy"],
                             "heldout_silhouette": result.metrics["heldout_silhouette"],
                             "steps_per_epoch": result.metrics["steps"] // epochs}
            print(f"encoder {sampling:10}: {seconds:7.1f} s/epoch ({out[sampling]['steps_per_epoch']} steps), "
                  f"held-out accuracy {result.metrics['heldout_accuracy']:.3f}, "
                  f"silhouette {result.metrics['heldout_silhouette']:.3f} after {epochs} epoch(s)", flush=True)
    for batched in ("batch-hard", "semi-hard"):
        ratio = out["paper"]["seconds_per_epoch"] / out[batched]["seconds_per_epoch"]
        print(f"encoder: {batched} mining is {ratio:.1f}x faster per epoch than the report's sampling "
              f"(target >= 20x at equal or better held-out accuracy)")
        out[f"ratio_{batched}"] = ratio
    return out


class _RandomPairs:
    """Stand-in for PaintingPairDataset: random images and pairs, same fields the training step reads."""

    def __init__(self, n: int = 512, clips: int = 128):
        self.images = torch.randint(0, 256, (n, 3, 64, 64), dtype=torch.uint8)
        self.pairs = torch.stack([torch.arange(n) % clips, torch.arange(n)], 1)


def gan_images_per_second(recipe: str, preset: str, steps: int) -> float:
    cfg = GanStageConfig(recipe=recipe, preset=preset).resolved()
    g_cfg, d_cfg = recipe_models(recipe, preset)
    torch.manual_seed(0)
    G, D = Generator(g_cfg), Discriminator(d_cfg)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=cfg.betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=cfg.betas)
    pairs = _RandomPairs()
    emb, spread = torch.randn(128, g_cfg.embedding_dim), torch.ones(g_cfg.embedding_dim)
    policy = parse_policy(cfg.diffaugment)
    device = torch.device("cpu")

    def step():
        items = torch.randint(0, 2 * len(pairs.pairs), (cfg.batch_size,))
        _train_step(cfg, items, pairs, emb, spread, G, D, G, D, opt_g, opt_d, policy, d_cfg.conditional, device)

    step()  # warm-up
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * cfg.batch_size / (time.perf_counter() - started)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/starter")
    p.add_argument("--cache-dir")
    p.add_argument("--encoder-epochs", type=int, default=2)
    p.add_argument("--encoder-lr", type=float, default=EncoderStageConfig.lr, help="same lr for every sampling")
    p.add_argument("--gan-steps", type=int, default=5)
    p.add_argument("--skip-encoder", action="store_true")
    p.add_argument("--skip-report-preset", action="store_true", help="REPORT-size GAN is slow on CPU")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CUDA {torch.cuda.is_available()}")
    figures = {}
    if not args.skip_encoder:
        figures["encoder"] = encoder_epochs(args.data, args.encoder_epochs, args.cache_dir, args.encoder_lr)
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
