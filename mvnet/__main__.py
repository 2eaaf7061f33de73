"""Command line: `python -m mvnet paint SONG.mp3 --out grid.png` and `python -m mvnet info`."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

EPILOG = """examples:
  python -m mvnet paint song.mp3 --out grid.png --n 9 --seed 0
  python -m mvnet paint song.mp3 --windows 4          # average the embedding over 4 windows of 8.91 s
  python -m mvnet info                                # architecture, parameter counts, FLOPs
  python -m mvnet info --preset report                # the MVNet report's networks, no weights needed
"""


def _parser() -> argparse.ArgumentParser:
    from mvnet.pipeline import DEFAULT_WEIGHTS

    parser = argparse.ArgumentParser(
        prog="python -m mvnet",
        description="MVNet: paint a grid of 64x64 images in the style of the art era a piece of music sounds like.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    paint = sub.add_parser("paint", help="audio file -> era scores and an image grid",
                           description="Embed an audio file (wav, flac, ogg, mp3, ...) and paint n images.")
    paint.add_argument("audio", type=Path, help="audio file; the first 10 minutes are read")
    paint.add_argument("--out", type=Path, default=Path("grid.png"), help="image grid to write (default: grid.png)")
    paint.add_argument("--n", type=int, default=9, help="number of images, 1-64 (default: 9)")
    paint.add_argument("--seed", type=int, default=0, help="noise seed: the same seed paints the same images")
    paint.add_argument("--windows", type=int, default=8,
                       help="embed up to this many 8.91 s windows spread over the piece and average (default: 8)")
    paint.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help=f"weights folder (default: {DEFAULT_WEIGHTS})")
    paint.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")

    info = sub.add_parser("info", help="print the configuration, parameter counts and FLOPs")
    info.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="weights folder to describe")
    info.add_argument("--preset", choices=["report", "cpu"], default=None,
                      help="describe an architecture preset instead of a weights folder")
    return parser


def _paint(args) -> int:
    from mvnet.audio import AudioError
    from mvnet.pipeline import MVNet, grid_image

    if not 1 <= args.n <= 64:
        print(f"error: --n must be between 1 and 64, got {args.n}", file=sys.stderr)
        return 2
    if not 0 <= args.seed < 2**31:
        print(f"error: --seed must be between 0 and 2147483647, got {args.seed}", file=sys.stderr)
        return 2
    if args.windows < 1:
        print(f"error: --windows must be at least 1, got {args.windows}", file=sys.stderr)
        return 2
    model = MVNet.from_pretrained(args.weights, device=args.device)
    try:
        with _quiet_decoder_noise():
            embedding = model.embed(args.audio, max_windows=args.windows)
    except AudioError as e:
        print(f"error: {args.audio}: {e}", file=sys.stderr)
        return 1
    images = model.paint(embedding, n=args.n, seed=args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    grid_image(images).save(args.out)
    starts = ", ".join(f"{s:.1f}s" for s in embedding.starts_seconds)
    print(f"{args.audio}: {embedding.duration_seconds:.1f} s, {len(embedding.starts_seconds)} window(s) at {starts}"
          + (" (shorter than 8.91 s: looped)" if embedding.looped else ""))
    scores = sorted(model.era_scores(embedding).items(), key=lambda kv: -kv[1])
    for era, p in scores:
        print(f"  {era:<12} {p:6.1%}  {'#' * round(p * 40)}")
    print(f"wrote {args.n} images (seed {args.seed}) to {args.out}")
    return 0


@contextlib.contextmanager
def _quiet_decoder_noise():
    """Hide what C decoders print on a damaged file (libmpg123's "Illegal Audio-MPEG-Header ...") so the
    person reads one error line; AudioError carries the message. The CLI is single-threaded, so fd 2 is ours."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as devnull:
            sys.stderr.flush()
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def describe(configs) -> str:
    """Architecture table: parameters and forward FLOPs per item of each network."""
    from mvnet.models import Discriminator, build, count_parameters, example_inputs, flops_per_item

    encoder, generator, discriminator = build(configs)
    lines = [f"{'network':<15}{'parameters':>14}{'GFLOP/item':>12}  configuration"]
    for kind, net, cfg in (("encoder", encoder, configs.encoder), ("generator", generator, configs.generator),
                           ("discriminator", discriminator, configs.discriminator)):
        flops = flops_per_item(net, *example_inputs(kind, configs))
        lines.append(f"{kind:<15}{count_parameters(net):>14,}{flops / 1e9:>12.3f}  {cfg}")
    if configs.discriminator.conditional:
        uncond = Discriminator(type(configs.discriminator)(**{**vars(configs.discriminator), "conditional": False}))
        lines.append(f"{'  (uncond. D)':<15}{count_parameters(uncond):>14,}")
    return "\n".join(lines)


def _info(args) -> int:
    from mvnet.models import PRESETS
    from mvnet.pipeline import MVNet

    if args.preset:
        print(f"preset: {args.preset}\n{describe(PRESETS[args.preset])}")
        return 0
    model = MVNet.from_pretrained(args.weights, device="cpu")
    cfg = model.config
    print(f"weights: {args.weights}")
    print(f"eras: {', '.join(model.eras)}")
    print(f"audio: {cfg['audio']}")
    print(f"era scores: softmax(-||e - centroid||_{model.distance_p:g} / {model.score_temperature:.3g})")
    atlas = model.atlas
    print(f"atlas: {f'{len(atlas.reference_eras)} reference clips' if atlas is not None else 'none'}")
    if model.training:
        print(f"training: {model.training}")
    print(describe(model.configs))
    return 0


def main(argv: list[str] | None = None) -> int:
    from mvnet.pipeline import WeightsError

    args = _parser().parse_args(argv)
    try:
        return _paint(args) if args.command == "paint" else _info(args)
    except WeightsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
