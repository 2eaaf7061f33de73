"""Command line of the training side (thin: parses flags into the stage configs and calls the stages).

    python -m train encoder  --data data/starter --run runs/encoder            # stage 1
    python -m train gan      --data data/starter --run runs/gan --encoder-run runs/encoder [--recipe paper]
    python -m train evaluate --encoder-run runs/encoder --gan-run runs/gan --data data/starter
    python -m train export   --encoder-run runs/encoder --gan-run runs/gan --out weights
    python -m train all      --data data/starter --runs runs/mine --out weights   # 1 + 2 + export

Every stage flag is a field of train.config.EncoderStageConfig / GanStageConfig (dashes for underscores).
--dry-run prints the resolved configuration as JSON and trains nothing; --resume continues a run from its
checkpoint; Ctrl-C stops at the next step, writes a checkpoint and says how to resume.
Runs under `torchrun --nproc_per_node N -m train ...` unchanged (data parallel, rank 0 writes).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import time
from pathlib import Path

from train.config import RECIPES, SAMPLINGS, Callbacks, ConfigError, EncoderStageConfig, GanStageConfig

HELP = {
    "data_root": "Musart-layout corpus folder ({training,testing}/<era>/a*, i*)",
    "run_dir": "run folder to write (options.json, log.txt, metrics.jsonl, samples/, checkpoint.pt, weights)",
    "encoder_run": "finished stage-1 run folder",
    "epochs": "training epochs",
    "kimg": "GAN budget in thousands of images shown to D (overrides --epochs)",
    "sampling": f"triplet sampling: {', '.join(SAMPLINGS)} (paper = the report's batch-1 scheme)",
    "recipe": f"GAN recipe: {', '.join(RECIPES)} (paper = the report's setup)",
    "preset": "model sizes: cpu or report (mvnet.models.PRESETS)",
    "eras_per_batch": "P: eras per triplet batch",
    "clips_per_era": "K: clips per era per triplet batch",
    "diffaugment": "comma list of color,translation,cutout ('' = none)",
    "ema_kimg": "EMA half-life of G in kimg (0 = no EMA)",
    "mode_seeking": "weight of the mode-seeking diversity term (0 = off)",
    "cond_sigma": "conditioning augmentation: noise as a fraction of the within-era spread (0 = off)",
    "era_weight": "weight of the AC-GAN era term: D classifies real paintings' eras, G paints the clip's era (0 = off)",
    "era_projection": "D also projects on the clip's era label (cGAN with projection)",
    "era_ce": "weight of an auxiliary era cross-entropy on the embedding (0 = triplet loss only)",
    "freq_mask": "SpecAugment: mask up to this many mel bins per clip (0 = off)",
    "time_mask": "SpecAugment: mask up to this many frames per clip (0 = off)",
    "pitch_bins": "shift the mel axis by up to +-this many bins (0 = off)",
    "cosine_lr": "decay the learning rate to 0 over the run (cosine schedule)",
    "lr": "Adam learning rate (default: 1e-3 for batched mining, the report's 5e-5 for --sampling paper)",
    "max_steps": "stop after this many steps and finish (smoke runs)",
    "cache_dir": "feature cache folder (default: <data>/_features)",
    "device": "cpu, cuda, cuda:1 ... (default: CUDA when present)",
    "snapshot_kimg": "sample grid every this many kimg (default: once per epoch)",
}
BUNDLED_KIMG = 200.0  # GAN budget of the bundled weights (weights/README.md), the default of `all`
# Short names first; the field names work too (torchrun takes `--run` for its own `--run-path`, so use
# `--run-dir` under torchrun).
FLAG_NAMES = {"data_root": ("--data", "--data-root"), "run_dir": ("--run", "--run-dir")}


def _add_config_flags(parser: argparse.ArgumentParser, cls) -> None:
    for f in dataclasses.fields(cls):
        flag, *aliases = FLAG_NAMES.get(f.name, ("--" + f.name.replace("_", "-"),))
        default = f.default if f.default is not dataclasses.MISSING else None
        kind = str(f.type)
        text = HELP.get(f.name, f.name.replace("_", " "))
        if kind == "bool | None":  # a recipe default unless given: --x / --no-x
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                                help=f"{text} (default: the recipe's)")
            continue
        if kind == "bool":
            if default:
                parser.add_argument("--no-" + f.name.replace("_", "-"), dest=f.name, action="store_false",
                                    default=True, help=f"turn off: {text}")
            else:
                parser.add_argument(flag, dest=f.name, action="store_true", help=text)
            continue
        if "tuple" in kind:
            parser.add_argument(flag, dest=f.name, nargs=2, type=float, default=None, metavar=("B1", "B2"),
                                help=f"{text} (default {default})")
            continue
        convert = int if kind.startswith("int") else float if kind.startswith("float") else str
        parser.add_argument(flag, *aliases, dest=f.name, type=convert, default=None,
                            help=f"{text} (default {default})" if default is not None else text)


def _config_from_args(cls, args: argparse.Namespace, base: dict | None = None):
    values = dict(base or {})
    for f in dataclasses.fields(cls):
        value = getattr(args, f.name, None)
        if value is not None:
            values[f.name] = tuple(value) if isinstance(value, list) else value
    return cls.from_dict(values)


class _Console:
    """Callbacks that print progress to stderr at most every few seconds, and stop cleanly on Ctrl-C."""

    def __init__(self, name: str, quiet: bool = False):
        self.name, self.quiet, self.stop, self.last = name, quiet, False, 0.0
        self.rank0 = int(os.environ.get("RANK", "0")) == 0

    def callbacks(self) -> Callbacks:
        return Callbacks(progress=self.progress, epoch_end=self.epoch_end, should_stop=lambda: self.stop)

    def progress(self, fraction, message, metrics):
        now = time.time()
        if self.rank0 and not self.quiet and (now - self.last > 5 or fraction >= 1):
            shown = ", ".join(f"{k} {v:.3g}" for k, v in list(metrics.items())[:5] if isinstance(v, float))
            print(f"[{self.name} {100 * fraction:5.1f}%] {message} {shown}", file=sys.stderr, flush=True)
            self.last = now

    def epoch_end(self, epoch, artifacts):
        if self.rank0 and not self.quiet:
            files = ", ".join(str(p) for p in artifacts.values() if p)
            print(f"[{self.name}] epoch {epoch}: {files}", file=sys.stderr, flush=True)

    def install(self):
        def handler(signum, frame):
            if self.stop:
                raise KeyboardInterrupt
            self.stop = True
            print(f"\n[{self.name}] stopping at the next step (Ctrl-C again to abort without a checkpoint)",
                  file=sys.stderr, flush=True)

        signal.signal(signal.SIGINT, handler)
        return self


def _run_stage(name, cfg, train_fn, quiet=False) -> int:
    console = _Console(name, quiet).install()
    result = train_fn(cfg, console.callbacks())
    if int(os.environ.get("RANK", "0")) == 0:
        if result.stopped:
            print(f"[{name}] stopped; continue with the same command plus --resume", file=sys.stderr)
        print(json.dumps({"run_dir": str(result.run_dir), "stopped": result.stopped, "metrics": result.metrics},
                         default=str))
    return 3 if result.stopped else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    enc = sub.add_parser("encoder", help="stage 1: train the audio encoder (triplet loss)")
    _add_config_flags(enc, EncoderStageConfig)
    gan = sub.add_parser("gan", help="stage 2: train the conditional GAN on a frozen encoder")
    _add_config_flags(gan, GanStageConfig)
    for p in (enc, gan):
        p.add_argument("--dry-run", action="store_true", help="print the resolved configuration and exit")
        p.add_argument("--quiet", action="store_true", help="no progress lines")
    sub.add_parser("evaluate", help="measure a trained model (see python -m train evaluate --help)", add_help=False)
    exp = sub.add_parser("export", help="write a weights folder (MVNet.from_pretrained) from two finished runs")
    exp.add_argument("--encoder-run", required=True, type=Path)
    exp.add_argument("--gan-run", required=True, type=Path)
    exp.add_argument("--out", default=Path("weights"), type=Path)
    exp.add_argument("--no-atlas", action="store_true", help="skip the UMAP era map")
    exp.add_argument("--grids", action="store_true", help="also write <out>/grids/<era>.png")
    al = sub.add_parser("all", help="stage 1, stage 2 and export in one go (defaults everywhere)")
    al.add_argument("--data", required=True)
    al.add_argument("--runs", default="runs/all", help="folder for the two run folders")
    al.add_argument("--out", default="weights")
    al.add_argument("--recipe", default="ours", choices=RECIPES)
    al.add_argument("--epochs", type=int, help="encoder epochs (default: the sampling's, 30)")
    al.add_argument("--kimg", type=float, default=BUNDLED_KIMG,
                    help=f"GAN budget in kimg (default {BUNDLED_KIMG:g}, the bundled weights' budget)")
    al.add_argument("--preset", default="cpu")
    al.add_argument("--device")
    al.add_argument("--resume", action="store_true")
    al.add_argument("--dry-run", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "evaluate":
        from train.evaluate import main as evaluate_main

        return evaluate_main(argv[1:])
    args = _parser().parse_args(argv)
    try:
        if args.command == "encoder":
            cfg = _config_from_args(EncoderStageConfig, args)
            cfg.validate()
            if args.dry_run:
                print(json.dumps(cfg.resolved().to_dict(), indent=2))
                return 0
            from train.encoder_stage import train_encoder

            return _run_stage("encoder", cfg, train_encoder, args.quiet)
        if args.command == "gan":
            cfg = _config_from_args(GanStageConfig, args)
            cfg.validate()
            if args.dry_run:
                print(json.dumps(cfg.resolved().to_dict(), indent=2))
                return 0
            from train.gan_stage import train_gan

            return _run_stage("gan", cfg, train_gan, args.quiet)
        if args.command == "export":
            from train.export import era_grids, export_run

            out = export_run(args.encoder_run, args.gan_run, args.out, atlas=not args.no_atlas)
            if args.grids:
                era_grids(out, out / "grids", encoder_run=args.encoder_run)
            print(f"wrote {out}")
            return 0
        if args.command == "all":
            return _all(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except _readable_errors() as exc:  # a bad corpus, checkpoint or weights folder: the message, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 2


def _readable_errors() -> tuple[type[Exception], ...]:
    """Errors whose message already tells a person what is wrong (bad corpus, checkpoint, weights, audio)."""
    from mvnet.audio import AudioError
    from mvnet.pipeline import WeightsError
    from train.checkpoint import CheckpointError
    from train.datasets import MusartError

    return (MusartError, CheckpointError, WeightsError, AudioError)


def _all(args) -> int:
    runs = Path(args.runs)
    enc = EncoderStageConfig(data_root=args.data, run_dir=str(runs / "encoder"), preset=args.preset,
                             device=args.device, resume=args.resume)
    if args.epochs:
        enc = enc.replace(epochs=args.epochs)
    gan = GanStageConfig(data_root=args.data, run_dir=str(runs / f"gan_{args.recipe}"), encoder_run=enc.run_dir,
                         recipe=args.recipe, preset=args.preset, kimg=args.kimg, device=args.device,
                         resume=args.resume)
    enc.validate()
    gan.validate()
    if args.dry_run:
        print(json.dumps({"encoder": enc.resolved().to_dict(), "gan": gan.resolved().to_dict(), "out": args.out},
                         indent=2))
        return 0
    from train.encoder_stage import ENCODER_META, train_encoder
    from train.export import export_run
    from train.gan_stage import GAN_META, train_gan

    if not (Path(enc.run_dir) / ENCODER_META).exists():  # a finished stage is not run again
        code = _run_stage("encoder", enc, train_encoder)
        if code:
            return code
    if not (Path(gan.run_dir) / GAN_META).exists():
        code = _run_stage("gan", gan, train_gan)
        if code:
            return code
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"wrote {export_run(enc.run_dir, gan.run_dir, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
