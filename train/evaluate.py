"""Evaluation: does the pipeline paint the era it hears, and does it paint more than one picture?

    python -m train evaluate --weights weights/ --data data/starter --out eval.json

Measured on the corpus's held-out split, with the era judge of train/judge.py (trained once per corpus on
its real training paintings and cached, so every run on that corpus is judged by the same network):

1. judge: era accuracy on held-out real paintings -- the ceiling for the generated images;
2. generated: each held-out clip is embedded and painted k times; era accuracy of those images by the judge
   (and how often the judge agrees with the era the encoder placed the clip in);
3. diversity ratio per era: mean pairwise distance of judge features among generated images of an era,
   divided by the same among real held-out paintings of that era (~0: collapse, ~1: as varied as real);
   also the same-clip ratio (only the noise differs), which isolates the report's failure mode;
4. KID (Binkowski et al. 2018) between generated and real held-out paintings in judge-feature space, per
   era and overall: unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3, mean and std over random subsets;
5. encoder: nearest-centroid era accuracy and silhouette of the held-out clip embeddings.

`render_comparison({"report recipe": a, "ours": b})` gives the side-by-side table for the model card.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from mvnet import ERAS, audio
from mvnet.files import atomic_write_bytes
from mvnet.pipeline import MVNet, WeightsError
from train.datasets import MusartError
from train.judge import (
    JudgeConfig,
    JudgeError,
    classification_report,
    judge_outputs,
    load_or_train_judge,
    read_corpus,
)

Progress = Callable[[float, str], None]


# -------------------------------------------------------------------------------------------- metrics


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (x.y / d + 1)^3 for rows of x (n, d) and y (m, d) -> (n, m)."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def kid(generated: np.ndarray, real: np.ndarray, n_subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> dict | None:
    """Kernel Inception Distance on features (n, d) and (m, d): {"mean", "std", "subset_size", "n_subsets"}.

    Each subset draws min(subset_size, n, m) rows of each set without replacement and computes the unbiased
    MMD^2 estimate (diagonal terms left out); mean and std are over subsets. None when either set has < 2 rows.
    """
    generated, real = np.asarray(generated, np.float64), np.asarray(real, np.float64)
    m = min(subset_size, len(generated), len(real))
    if m < 2:
        return None
    rng = np.random.default_rng(seed)
    estimates = np.empty(n_subsets)
    for i in range(n_subsets):
        x = generated[rng.choice(len(generated), m, replace=False)]
        y = real[rng.choice(len(real), m, replace=False)]
        k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
        within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
        estimates[i] = within - 2 * k_xy.mean()
    return {"mean": float(estimates.mean()), "std": float(estimates.std()), "subset_size": int(m),
            "n_subsets": int(n_subsets)}


def mean_pairwise_distance(features: np.ndarray) -> float | None:
    """Mean Euclidean distance over all unordered pairs of rows of (n, d); None when n < 2."""
    f = torch.as_tensor(np.asarray(features, np.float64))
    if len(f) < 2:
        return None
    d = torch.cdist(f, f)
    i, j = torch.triu_indices(len(f), len(f), offset=1)
    return float(d[i, j].mean())


def diversity_ratio(generated: np.ndarray, real: np.ndarray) -> float | None:
    """mean_pairwise_distance(generated) / mean_pairwise_distance(real): ~0 collapse, ~1 as varied as real."""
    g, r = mean_pairwise_distance(generated), mean_pairwise_distance(real)
    if g is None or not r:
        return None
    return g / r


def same_clip_distance(features: np.ndarray, clip_ids: np.ndarray) -> float | None:
    """Mean pairwise distance among images painted from the same clip (only the noise differs), over clips."""
    per_clip = [mean_pairwise_distance(features[clip_ids == c]) for c in np.unique(clip_ids)]
    per_clip = [d for d in per_clip if d is not None]
    return float(np.mean(per_clip)) if per_clip else None


def encoder_metrics(embeddings: np.ndarray, labels: np.ndarray, centroids: np.ndarray, p: float = 5.0,
                    eras=ERAS) -> dict:
    """Nearest-centroid era accuracy (p-norm distance, as the triplet loss) and silhouette of embeddings (N, D).

    The silhouette (sklearn, same p-norm distance, as the encoder stage logs it) is in [-1, 1]; None when
    fewer than two eras are present.
    """
    from sklearn.metrics import silhouette_score

    embeddings, labels = np.asarray(embeddings, np.float64), np.asarray(labels)
    distances = np.linalg.norm(embeddings[:, None, :] - np.asarray(centroids, np.float64)[None], ord=p, axis=-1)
    report = classification_report(distances.argmin(1), labels, eras)
    n_labels = len(np.unique(labels))
    report["silhouette"] = (float(silhouette_score(embeddings, labels, metric="minkowski", p=p))
                            if 2 <= n_labels <= len(labels) - 1 else None)
    return report


# -------------------------------------------------------------------------------------------- clips


def embed_clips(pipeline: MVNet, paths: list[Path], max_windows: int = 8, batch_size: int = 32,
                progress: Progress | None = None) -> np.ndarray:
    """Embeddings (N, 10) of audio files, as MVNet.embed gives them (mean over windows), computed in batches."""
    vectors = []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        windows = [audio.clip_windows(audio.load_audio(p), max_windows=max_windows).samples for p in chunk]
        features = audio.log_mel_features(np.concatenate(windows), device=pipeline.device)
        per_window = pipeline.embed_features(features)
        bounds = np.cumsum([0] + [len(w) for w in windows])
        vectors += [per_window[a:b].mean(axis=0) for a, b in zip(bounds[:-1], bounds[1:])]
        if progress is not None:
            progress(min(1.0, (start + len(chunk)) / len(paths)), f"embedded {start + len(chunk)}/{len(paths)} clips")
    return np.stack(vectors) if vectors else np.zeros((0, pipeline.centroids.shape[1]), np.float32)


# -------------------------------------------------------------------------------------------- evaluate


def _rounded(x, digits: int = 6):
    if isinstance(x, dict):
        return {k: _rounded(v, digits) for k, v in x.items()}
    if isinstance(x, list):
        return [_rounded(v, digits) for v in x]
    if isinstance(x, float):
        return float(f"{x:.{digits}g}") if abs(x) < 1e-3 and x != 0 else round(x, digits)
    return x


def evaluate(pipeline: MVNet, data_root: str | Path, judge_dir: str | Path = "cache/judge",
             images_per_clip: int = 4, seed: int = 0, max_clips_per_era: int | None = None,
             kid_subsets: int = 100, kid_subset_size: int = 1000, judge_config: JudgeConfig | None = None,
             progress: Progress | None = None) -> dict:
    """All metrics of one pipeline on one corpus's held-out split, as a JSON-able dict (see module docstring)."""
    say = progress or (lambda fraction, message: None)
    if tuple(pipeline.eras) != tuple(ERAS):
        raise WeightsError(f"The weights' eras {list(pipeline.eras)} differ from the judge's {list(ERAS)}.")
    if not 1 <= images_per_clip <= 64:
        raise ValueError(f"images_per_clip must be between 1 and 64, got {images_per_clip}")
    corpus = read_corpus(data_root)
    clips = {era: [item.path for item in corpus.split("testing").items if item.era == era] for era in ERAS}
    if max_clips_per_era is not None:
        clips = {era: paths[:max_clips_per_era] for era, paths in clips.items()}
    paths = [p for era in ERAS for p in clips[era]]
    labels = np.array([k for k, era in enumerate(ERAS) for _ in clips[era]], dtype=np.int64)
    timings = {}

    started = time.perf_counter()
    say(0.0, "judge: loading or training the era classifier")
    bundle = load_or_train_judge(corpus, judge_dir, judge_config, pipeline.device,
                                 progress=lambda f, m: say(0.4 * f, m))
    timings["judge_seconds"] = time.perf_counter() - started

    started = time.perf_counter()
    embeddings = embed_clips(pipeline, paths, progress=lambda f, m: say(0.4 + 0.2 * f, m))
    timings["embed_seconds"] = time.perf_counter() - started
    encoder = encoder_metrics(embeddings, labels, pipeline.centroids, pipeline.distance_p)
    encoder_era = pipeline.distances(embeddings).argmin(1)

    started = time.perf_counter()
    images = torch.cat([pipeline.paint(e, n=images_per_clip, seed=seed + i) for i, e in enumerate(embeddings)])
    timings["paint_seconds"] = time.perf_counter() - started
    say(0.7, f"painted {len(images)} images; judging them")
    image_labels = np.repeat(labels, images_per_clip)
    image_clips = np.repeat(np.arange(len(paths)), images_per_clip)

    started = time.perf_counter()
    logits, gen_features = judge_outputs(bundle.judge, images)
    _, real_features = judge_outputs(bundle.judge, bundle.testing.images)
    timings["judge_images_seconds"] = time.perf_counter() - started
    predicted = logits.argmax(1)
    generated = classification_report(predicted, image_labels)
    generated["agreement_with_encoder"] = float((predicted == np.repeat(encoder_era, images_per_clip)).mean())
    # Where the judge puts the generated images: a generator that paints one era for everything would score
    # that era's accuracy high; this share shows it (each era is 20% of the clips).
    generated["predicted_share"] = {era: float((predicted == k).mean()) for k, era in enumerate(ERAS)}
    # The generator alone: images painted from each era centroid (what a perfectly placed clip would get).
    n_centroid = 4 * images_per_clip * 4
    centroid_images = torch.cat([pipeline.paint(c, n=n_centroid, seed=seed) for c in pipeline.centroids])
    centroid_logits, _ = judge_outputs(bundle.judge, centroid_images)
    generated["from_centroids"] = classification_report(centroid_logits.argmax(1),
                                                        np.repeat(np.arange(len(ERAS)), n_centroid))

    started = time.perf_counter()
    real_labels = bundle.testing.labels
    diversity, same_clip, kids = {}, {}, {}
    for k, era in enumerate(ERAS):
        g, r = gen_features[image_labels == k], real_features[real_labels == k]
        diversity[era] = diversity_ratio(g, r)
        real_spread = mean_pairwise_distance(r)
        noise_spread = same_clip_distance(g, image_clips[image_labels == k])
        same_clip[era] = noise_spread / real_spread if noise_spread is not None and real_spread else None
        kids[era] = kid(g, r, kid_subsets, kid_subset_size, seed)
        say(0.7 + 0.3 * (k + 1) / len(ERAS), f"diversity and KID: {era}")
    timings["metrics_seconds"] = time.perf_counter() - started

    def mean_of(values: dict):
        present = [v for v in values.values() if v is not None]
        return float(np.mean(present)) if present else None

    return _rounded({
        "data_root": str(data_root),
        "images_per_clip": images_per_clip,
        "seed": seed,
        "clips": {"total": len(paths), "per_era": {era: len(clips[era]) for era in ERAS}},
        "weights_training": pipeline.training,
        "judge": {
            "key": bundle.info["key"], "folder": str(bundle.folder), "cached": bundle.cached,
            "train_seconds": bundle.info["train_seconds"], "config": bundle.info["config"],
            "training": bundle.info["training"], "testing": bundle.info["testing"],
            **bundle.info["held_out"],
        },
        "encoder": encoder,
        "generated": generated,
        "diversity": {"mean": mean_of(diversity), "per_era": diversity,
                      "same_clip_mean": mean_of(same_clip), "same_clip_per_era": same_clip},
        "kid": {"overall": kid(gen_features, real_features, kid_subsets, kid_subset_size, seed), "per_era": kids,
                "reference": "held-out real paintings (deduplicated, none also in training)"},
        "timing": timings,
    })


# -------------------------------------------------------------------------------------------- tables


def _fmt(x, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _kid_text(entry: dict | None) -> str:
    return "n/a" if entry is None else f"{1000 * entry['mean']:.1f} ± {1000 * entry['std']:.1f}"


SUMMARY_ROWS = [
    ("Judge accuracy on held-out real paintings (ceiling)",
     lambda r: f"{_pct(r['judge']['accuracy'])} (balanced {_pct(r['judge']['balanced_accuracy'])})"),
    ("Encoder nearest-centroid era accuracy, held-out clips",
     lambda r: f"{_pct(r['encoder']['accuracy'])} (balanced {_pct(r['encoder']['balanced_accuracy'])})"),
    ("Encoder silhouette of held-out embeddings", lambda r: _fmt(r["encoder"]["silhouette"])),
    ("Era accuracy of generated images (judge)",
     lambda r: f"{_pct(r['generated']['accuracy'])} (balanced {_pct(r['generated']['balanced_accuracy'])})"),
    ("Judge agrees with the encoder's era", lambda r: _pct(r["generated"]["agreement_with_encoder"])),
    ("Era accuracy of images painted from the era centroids (generator alone)",
     lambda r: _pct(r["generated"].get("from_centroids", {}).get("accuracy"))),
    ("Diversity ratio, mean over eras (~1 real, ~0 collapse)", lambda r: _fmt(r["diversity"]["mean"])),
    ("Same-clip diversity ratio (noise only)", lambda r: _fmt(r["diversity"]["same_clip_mean"])),
    ("KID x 10^3, all eras (± std over subsets; lower is better)", lambda r: _kid_text(r["kid"]["overall"])),
]


def render_comparison(runs: dict[str, dict]) -> str:
    """Markdown: a summary table and a per-era table, one column (group) per run, e.g. {"ours": results}."""
    names = list(runs)
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    lines += [f"| {label} | " + " | ".join(cell(runs[n]) for n in names) + " |" for label, cell in SUMMARY_ROWS]
    first = runs[names[0]]
    lines += ["", "Per era (generated era accuracy / share of all generated images the judge puts in this era "
              "(20% each if balanced) / diversity ratio / KID x 10^3):", ""]
    header = "| era | judge on real |" + "".join(f" {n}: accuracy | {n}: judged share | {n}: diversity | {n}: KID |"
                                                 for n in names)
    lines += [header, "|---|---|" + "---|---|---|---|" * len(names)]
    for era in ERAS:
        row = f"| {era} | {_pct(first['judge']['per_era'].get(era))} |"
        for n in names:
            r = runs[n]
            share = r["generated"].get("predicted_share", {}).get(era)
            row += (f" {_pct(r['generated']['per_era'].get(era))} | {_pct(share)} |"
                    f" {_fmt(r['diversity']['per_era'].get(era))} | {_kid_text(r['kid']['per_era'].get(era))} |")
        lines.append(row)
    counts = first["clips"]["per_era"]
    lines += ["", f"Held-out clips per era: {', '.join(f'{e} {counts[e]}' for e in ERAS)}; "
              f"{first['images_per_clip']} images per clip. Real reference: "
              f"{first['judge']['testing']['paintings']} deduplicated held-out paintings "
              f"({', '.join(f'{e} {c}' for e, c in first['judge']['testing']['per_era'].items())}). "
              f"Judge: {first['judge']['key']}, trained in {first['judge']['train_seconds']:.0f} s "
              f"on {first['judge']['training']['paintings']} paintings."]
    keys = {r["judge"]["key"] for r in runs.values()}
    if len(keys) > 1:
        lines.append(f"WARNING: these runs were judged by different judges ({sorted(keys)}); not comparable.")
    return "\n".join(lines) + "\n"


def render_markdown(results: dict, name: str = "this run") -> str:
    """Markdown for one run (the same tables as render_comparison with a single column group)."""
    return render_comparison({name: results})


# -------------------------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train evaluate",
        description="Measure a trained MVNet on a corpus's held-out split: era accuracy of generated images, "
                    "diversity (mode collapse), KID and encoder accuracy, all judged by an era classifier "
                    "trained on the corpus's real paintings (trained once per corpus, then cached).",
        epilog="Examples:\n"
               "  python -m train evaluate --weights weights --data data/starter --out eval.json\n"
               "  python -m train evaluate --encoder-run runs/enc --gan-run runs/gan --data data/starter "
               "--out runs/gan/eval.json\n"
               "  python -m train evaluate --compare 'report recipe=eval_paper.json' 'ours=eval_ours.json' "
               "--markdown table.md",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = p.add_argument_group("what to evaluate (a weights folder, or an encoder run + a GAN run)")
    source.add_argument("--weights", type=Path, help="folder made by MVNet.save_pretrained / export")
    source.add_argument("--encoder-run", type=Path, help="finished stage-1 run folder (with --gan-run)")
    source.add_argument("--gan-run", type=Path, help="finished stage-2 run folder (with --encoder-run)")
    p.add_argument("--data", type=Path, help="Musart-layout corpus; its testing/ split is used")
    p.add_argument("--out", type=Path, help="results JSON (default: eval.json); markdown goes next to it")
    p.add_argument("--markdown", type=Path, help="markdown table path (default: --out with .md)")
    p.add_argument("--judge-dir", type=Path, default=Path("cache/judge"),
                   help="where judges are cached, one folder per corpus (default: cache/judge)")
    p.add_argument("--judge-epochs", type=int, default=JudgeConfig.epochs,
                   help=f"judge training epochs when no cached judge exists (default {JudgeConfig.epochs})")
    p.add_argument("--images-per-clip", type=int, default=4, help="paintings per held-out clip (default 4)")
    p.add_argument("--max-clips-per-era", type=int, help="evaluate on at most this many clips per era (quick look)")
    p.add_argument("--kid-subsets", type=int, default=100, help="KID subsets (default 100)")
    p.add_argument("--kid-subset-size", type=int, default=1000, help="KID subset size, capped by the set sizes")
    p.add_argument("--seed", type=int, default=0, help="noise seed for painting (clip i uses seed + i)")
    p.add_argument("--device", help="cpu, cuda, ... (default: CUDA when present)")
    p.add_argument("--compare", nargs="+", metavar="NAME=RESULTS.json",
                   help="only render a side-by-side table of earlier results (to --markdown or stdout)")
    return p


def _compare(args) -> int:
    runs = {}
    for item in args.compare:
        name, sep, path = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--compare takes NAME=RESULTS.json, got {item!r}")
        try:
            runs[name] = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"Cannot read results {path}: {e}") from e
    table = render_comparison(runs)
    if args.markdown:
        atomic_write_bytes(args.markdown, table.encode())
    print(table)
    return 0


def _load_pipeline(args) -> MVNet:
    if args.weights and (args.encoder_run or args.gan_run):
        raise ValueError("Give either --weights or --encoder-run with --gan-run, not both.")
    if args.weights:
        return MVNet.from_pretrained(args.weights, device=args.device)
    if args.encoder_run and args.gan_run:
        from train.export import pipeline_from_runs

        return pipeline_from_runs(args.encoder_run, args.gan_run, device=args.device)
    raise ValueError("Say what to evaluate: --weights FOLDER, or --encoder-run RUN --gan-run RUN.")


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (python -m train evaluate ...); returns a process exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.compare:
            return _compare(args)
        if args.data is None:
            raise ValueError("--data is required: the Musart-layout corpus whose testing/ split is evaluated.")
        pipeline = _load_pipeline(args)
        out = args.out or Path("eval.json")
        markdown = args.markdown or out.with_suffix(".md")

        def progress(fraction: float, message: str) -> None:
            print(f"[{100 * fraction:5.1f}%] {message}", file=sys.stderr, flush=True)

        results = evaluate(pipeline, args.data, args.judge_dir, args.images_per_clip, args.seed,
                           args.max_clips_per_era, args.kid_subsets, args.kid_subset_size,
                           JudgeConfig(epochs=args.judge_epochs), progress)
        results["weights"] = str(args.weights) if args.weights else {"encoder_run": str(args.encoder_run),
                                                                      "gan_run": str(args.gan_run)}
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out, json.dumps(results, indent=1).encode())
        table = render_markdown(results)
        atomic_write_bytes(markdown, table.encode())
        print(table)
        print(f"Wrote {out} and {markdown}", file=sys.stderr)
        return 0
    except (ValueError, MusartError, WeightsError, JudgeError, audio.AudioError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
