"""Stage 1: the audio encoder, trained with a triplet margin loss (report: margin 3, p 5, Adam 5e-5).

Two ways to form triplets:
- batched (default): P eras x K clips per batch, every anchor gets its hardest positive and negative in the
  batch ("batch-hard") or FaceNet's semi-hard negative ("semi-hard"); one forward pass per batch.
- "paper": the report's scheme -- batch size 1, for every training clip a random positive and a random
  negative picked in Python, three forward passes per triplet.

Per epoch: loss, held-out nearest-centroid era accuracy, silhouette, an embedding scatter (2-D PCA). At the
end the run folder holds encoder.safetensors and encoder.json (feature statistics, era centroids, score
temperature, distance p, metrics), which stage 2 and export read.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mvnet import ERAS
from mvnet.audio import feature_statistics, standardize
from mvnet.models import PRESETS, AudioEncoder, EncoderConfig, ModelConfigs
from train.augment import spec_augment, time_shift
from train.checkpoint import (
    has_checkpoint,
    load_checkpoint,
    restore_rng_after_resume,
    save_checkpoint,
    seed_everything,
)
from train.config import Callbacks, ConfigError, EncoderStageConfig, StageResult
from train.distributed import any_rank, barrier, distributed_context, unwrap, wrap
from train.losses import MINERS, pairwise_distances
from train.runs import RunFolder, atomic_write_bytes, atomic_write_json, read_finished_run

ENCODER_WEIGHTS = "encoder.safetensors"
ENCODER_META = "encoder.json"
EMBEDDINGS_FILE = "embeddings.safetensors"


# ---------------------------------------------------------------------------------------------- data
@dataclass
class ClipSet:
    """All clips of one split in memory: features (N, 3, 128, 256) float16 dB, labels (N,) int64."""

    features: torch.Tensor
    labels: torch.Tensor
    names: list[str]

    def __len__(self) -> int:
        return len(self.labels)


def load_corpus(data_root: str | Path, cache_dir: str | None = None, image_size: int = 64, device=None,
                log=None) -> dict:
    """{"training": (ClipSet, SplitData), "testing": (ClipSet, SplitData)} of a Musart-layout corpus.

    Features come from the feature cache (computed once per file, <data_root>/_features by default) and are
    held in memory as float16; SplitData (train.datasets) carries the images and the pairing rule.
    """
    from train.datasets import MusartError, read_musart
    from train.feature_cache import FeatureCache

    try:
        corpus = read_musart(data_root, image_size=image_size, log=log)
        splits = {name: corpus.split(name) for name in ("training", "testing")}
    except MusartError as exc:
        raise ConfigError(str(exc)) from exc
    cache = FeatureCache(cache_dir or Path(data_root) / "_features", device=device)
    out = {}
    for name, split in splits.items():
        features = torch.from_numpy(np.array(cache.features_for(split.audio), dtype=np.float16))
        names = [f"{item.era}/{item.path.name}" for item in split.items]
        out[name] = (ClipSet(features, torch.as_tensor(split.labels, dtype=torch.int64), names), split)
    return out


class _WithEraHead(nn.Module):
    """The encoder plus a linear era classifier on its embedding (training only; the head is not exported).

    One module so DistributedDataParallel sees every trained parameter in one forward pass.
    """

    def __init__(self, encoder: AudioEncoder, n_eras: int = len(ERAS)):
        super().__init__()
        self.encoder = encoder
        self.era_head = nn.Linear(encoder.cfg.embedding_dim, n_eras)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.encoder(x)
        return embedding, self.era_head(embedding)


# ---------------------------------------------------------------------------------------------- sampling
def pk_batches(labels: np.ndarray, eras_per_batch: int, clips_per_era: int, seed: int, epoch: int) -> list[np.ndarray]:
    """One epoch of P x K batches, balanced across eras (small eras are cycled), ~len(labels) clips in total.

    Deterministic in (seed, epoch), so a resumed run replays the same batches.
    """
    rng = np.random.default_rng([seed, epoch, 1])
    eras = [e for e in np.unique(labels) if (labels == e).sum() >= 2]
    if len(eras) < 2:
        raise ConfigError("triplet training needs at least two eras with two or more clips each")
    p = min(eras_per_batch, len(eras))
    queues = {e: [] for e in eras}

    def take(era, k):
        out = []
        while len(out) < k:
            if not queues[era]:
                queues[era] = list(rng.permutation(np.flatnonzero(labels == era)))
            out.append(queues[era].pop())
        return out

    n_batches = max(1, len(labels) // (p * clips_per_era))
    batches = []
    for _ in range(n_batches):
        chosen = rng.choice(eras, size=p, replace=False)
        batches.append(np.array([i for e in chosen for i in take(e, clips_per_era)], dtype=np.int64))
    return batches


def paper_triplets(labels: np.ndarray, seed: int, epoch: int) -> list[np.ndarray]:
    """The report's scheme: every clip once as anchor (shuffled), a random positive of its era and a random
    negative of another era, picked one by one in Python. Returns [array([a, p, n])] per step."""
    rnd = random.Random(seed * 100_003 + epoch)
    by_era: dict[int, list[int]] = {}
    for i, label in enumerate(labels.tolist()):
        by_era.setdefault(label, []).append(i)
    order = list(range(len(labels)))
    rnd.shuffle(order)
    triplets = []
    for anchor in order:
        era = int(labels[anchor])
        same = [i for i in by_era[era] if i != anchor]
        others = [i for i in range(len(labels)) if labels[i] != era]
        if not same or not others:
            continue
        triplets.append(np.array([anchor, rnd.choice(same), rnd.choice(others)], dtype=np.int64))
    return triplets


def epoch_plan(cfg: EncoderStageConfig, labels: np.ndarray, epoch: int, rank: int, world: int) -> list[np.ndarray]:
    plan = (paper_triplets(labels, cfg.seed, epoch) if cfg.sampling == "paper"
            else pk_batches(labels, cfg.eras_per_batch, cfg.clips_per_era, cfg.seed, epoch))
    per_rank = len(plan) // world  # equal counts, so DDP ranks take the same number of steps
    return plan[rank::world][:per_rank] if world > 1 else plan


# ---------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def embed_clips(encoder: nn.Module, clips: ClipSet, mean, std, device, batch_size: int = 64) -> np.ndarray:
    """(N, 10) float32 embeddings of a ClipSet, encoder in eval mode."""
    was_training = encoder.training
    encoder.eval()
    out = []
    for start in range(0, len(clips), batch_size):
        x = standardize(clips.features[start:start + batch_size].to(device), mean, std)
        out.append(encoder(x).float().cpu())
    encoder.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, 10), np.float32)


def era_centroids(embeddings: np.ndarray, labels: np.ndarray, n_eras: int = len(ERAS)) -> np.ndarray:
    """(E, D) mean embedding per era; an era without clips gets a far-away centroid (never nearest)."""
    out = np.full((n_eras, embeddings.shape[1]), 1e6, dtype=np.float32)
    for e in range(n_eras):
        if (labels == e).any():
            out[e] = embeddings[labels == e].mean(0)
    return out


def centroid_distances(embeddings: np.ndarray, centroids: np.ndarray, p: float) -> np.ndarray:
    return pairwise_distances(torch.as_tensor(embeddings, dtype=torch.float64),
                              torch.as_tensor(centroids, dtype=torch.float64), p).numpy()


def score_nll(distances: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of the true era under softmax(-d / T)."""
    logits = -distances / temperature
    logits = logits - logits.max(1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    return float(-log_p[np.arange(len(labels)), labels].mean())


def fit_temperature(distances: np.ndarray, labels: np.ndarray) -> float:
    """T minimising the NLL of softmax(-d / T) on held-out clips (1-D search over log T)."""
    if len(labels) == 0:
        return 1.0
    grid = np.exp(np.linspace(math.log(0.01), math.log(100.0), 200))
    return float(min(grid, key=lambda t: score_nll(distances, labels, t)))


def crossfit_nll(distances: np.ndarray, labels: np.ndarray, folds: int = 2, seed: int = 0) -> float:
    """NLL of the era scores on clips whose temperature was fitted on the other folds.

    The exported temperature is fitted on all held-out clips (it is a calibration setting, and accuracy does
    not depend on it); this figure is what calibration looks like on clips the fit never saw.
    """
    if len(labels) < 2 * folds:
        return float("nan")
    fold = np.random.default_rng(seed).permutation(len(labels)) % folds
    total = 0.0
    for k in range(folds):
        t = fit_temperature(distances[fold != k], labels[fold != k])
        total += score_nll(distances[fold == k], labels[fold == k], t) * (fold == k).sum()
    return total / len(labels)


def embedding_metrics(train_emb, train_labels, test_emb, test_labels, p: float) -> dict:
    """Nearest-centroid era accuracy and silhouette on held-out clips, centroids from the training clips."""
    from sklearn.metrics import silhouette_score

    centroids = era_centroids(train_emb, train_labels)
    d = centroid_distances(test_emb, centroids, p)
    accuracy = float((d.argmin(1) == test_labels).mean()) if len(test_labels) else float("nan")
    silhouette = float("nan")
    if len(np.unique(test_labels)) >= 2 and len(test_labels) > len(np.unique(test_labels)):
        silhouette = float(silhouette_score(test_emb, test_labels, metric="minkowski", p=p))
    train_d = centroid_distances(train_emb, centroids, p)
    return {
        "heldout_accuracy": accuracy,
        "heldout_silhouette": silhouette,
        "train_accuracy": float((train_d.argmin(1) == train_labels).mean()),
        "score_temperature": fit_temperature(d, test_labels),
        "score_nll_crossfit": crossfit_nll(d, test_labels),
        "centroids": centroids,
    }


def save_scatter(path: Path, train_emb, train_labels, test_emb, test_labels, title: str) -> Path:
    """2-D PCA of the embeddings: training clips as dots, held-out clips as crosses, coloured by era."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    both = np.concatenate([train_emb, test_emb]).astype(np.float64)
    centre = both.mean(0)
    _, _, vt = np.linalg.svd(both - centre, full_matrices=False)
    proj = lambda x: (x - centre) @ vt[:2].T  # noqa: E731
    fig, ax = plt.subplots(figsize=(5, 4.5))
    colours = plt.get_cmap("tab10")
    for e, era in enumerate(ERAS):
        tr, te = proj(train_emb[train_labels == e]), proj(test_emb[test_labels == e])
        ax.scatter(tr[:, 0], tr[:, 1], s=6, alpha=0.4, color=colours(e), label=era)
        ax.scatter(te[:, 0], te[:, 1], s=18, marker="x", color=colours(e))
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, markerscale=2)
    fig.tight_layout()
    tmp = path.with_name("." + path.name)
    fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    tmp.replace(path)
    return path


# ---------------------------------------------------------------------------------------------- the stage
def train_encoder(cfg: EncoderStageConfig, callbacks: Callbacks | None = None) -> StageResult:
    """Train (or resume) stage 1 into cfg.run_dir; returns StageResult(run_dir, final metrics, stopped)."""
    cfg = cfg.resolved()
    callbacks = callbacks or Callbacks()
    with distributed_context(cfg.device) as info:
        return _run(cfg, callbacks, info)


def _run(cfg: EncoderStageConfig, callbacks: Callbacks, info) -> StageResult:
    if cfg.sampling == "paper" and info.distributed:
        raise ConfigError("sampling 'paper' is the report's batch-1 scheme and runs in one process; "
                          "use batch-hard or semi-hard under torchrun")
    run = RunFolder(cfg.run_dir, writer=info.is_main)
    _check_run_folder(cfg.run_dir, cfg.resume)
    run.write_options({"stage": "encoder", **cfg.to_dict()})  # on resume: the options now in force
    seed_everything(cfg.seed + info.rank)
    device = info.device

    data = load_corpus(cfg.data_root, cfg.cache_dir, device=device, log=run.log)
    (train_set, _), (test_set, _) = data["training"], data["testing"]
    del data
    mean, std = (torch.as_tensor(v) for v in feature_statistics(train_set.features))
    mean, std = mean.to(device), std.to(device)
    train_labels = train_set.labels.numpy()
    run.log(f"stage 1 ({cfg.sampling}) on {device} x{info.world_size}: {len(train_set)} training clips "
            f"{np.bincount(train_labels, minlength=len(ERAS)).tolist()}, {len(test_set)} held-out")

    encoder_cfg: EncoderConfig = PRESETS[cfg.preset].encoder
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    # channels_last: oneDNN's NHWC convolutions make a batched step ~19% faster on CPU (no change at batch 1).
    model = AudioEncoder(encoder_cfg).to(device, memory_format=torch.channels_last)
    trainable = _WithEraHead(model).to(device) if cfg.era_ce else model
    optimizer = torch.optim.Adam(trainable.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
    seed_everything(cfg.seed + info.rank)

    step, epoch, position, seconds_before = 0, 0, 0, 0.0
    if cfg.resume and has_checkpoint(cfg.run_dir):
        state = load_checkpoint(cfg.run_dir)
        model.load_state_dict(state["model"])
        if cfg.era_ce:
            trainable.era_head.load_state_dict(state["era_head"])
        optimizer.load_state_dict(state["optimizer"])
        step, epoch, position = state["step"], state["epoch"], state["position"]
        seconds_before = float(state.get("train_seconds", 0.0))
        restore_rng_after_resume(state, cfg.seed, info.rank)
        run.truncate_metrics(step)
        run.log(f"resumed at step {step} (epoch {epoch}, batch {position})")
    ddp_model = wrap(trainable, info)
    miner = MINERS.get(cfg.sampling)
    steps_per_epoch = len(epoch_plan(cfg, train_labels, 0, info.rank, info.world_size))
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)

    def checkpoint(epoch_, position_):
        if info.is_main:
            save_checkpoint(cfg.run_dir, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                          **({"era_head": trainable.era_head.state_dict()} if cfg.era_ce else {}),
                                          "step": step, "epoch": epoch_, "position": position_,
                                          "train_seconds": seconds_before + time.time() - started,
                                          "stage": "encoder"})

    last = {}
    started = time.time()
    while epoch < cfg.epochs and step < total_steps:
        plan = epoch_plan(cfg, train_labels, epoch, info.rank, info.world_size)
        ddp_model.train()
        epoch_started, losses = time.time(), []
        for position in range(position, len(plan)):  # noqa: B020 -- resume continues mid-epoch
            if any_rank(callbacks.stop_requested(), info):
                checkpoint(epoch, position)
                run.log(f"stopped at step {step}; checkpoint written")
                return StageResult(Path(cfg.run_dir), last, stopped=True)
            idx = torch.as_tensor(plan[position])
            x = standardize(train_set.features[idx].to(device), mean, std)
            if cfg.augment:
                x = time_shift(x, cfg.max_shift_frames)
                x = spec_augment(x, cfg.freq_mask, cfg.time_mask, cfg.pitch_bins)
            x = x.contiguous(memory_format=torch.channels_last)
            y = train_set.labels[idx].to(device)
            if miner is None:  # the report: anchor, positive, negative through the net one at a time
                a, p, n = (ddp_model(x[i:i + 1]) for i in range(3))
                loss = nn.functional.triplet_margin_loss(a, p, n, margin=cfg.margin, p=cfg.p)
                stats = {"loss": loss}
            elif cfg.era_ce:  # triplet loss plus cross-entropy of a linear era classifier on the embedding
                embedding, era_logits = ddp_model(x)
                stats = miner(embedding, y, cfg.margin, cfg.p)
                stats["era_ce"] = nn.functional.cross_entropy(era_logits, y)
                loss = stats["loss"] + cfg.era_ce * stats["era_ce"]
            else:
                stats = miner(ddp_model(x), y, cfg.margin, cfg.p)
                loss = stats["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.cosine_lr:
                for group in optimizer.param_groups:
                    group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / max(1, total_steps)))
            optimizer.step()
            step += 1
            losses.append(float(loss.detach()))
            row = {k: float(v.detach()) for k, v in stats.items()}
            if step % 10 == 0 or miner is not None:
                run.metrics({"kind": "step", "step": step, "epoch": epoch, **row})
            callbacks.report(step / total_steps, f"encoder epoch {epoch + 1}/{cfg.epochs} step {step}", row)
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                checkpoint(epoch, position + 1)
            if step >= total_steps:
                position += 1
                break
        else:
            position = len(plan)
        epoch_seconds = time.time() - epoch_started
        finished_epoch = position >= len(plan)
        if finished_epoch:
            epoch, position = epoch + 1, 0
        last = _end_of_epoch(cfg, run, model, train_set, test_set, mean, std, device, info, epoch,
                             losses, epoch_seconds, step, callbacks)
        checkpoint(epoch, position)
        barrier(info)

    last = _finish(cfg, run, model, train_set, test_set, mean, std, device, info, step,
                   seconds_before + time.time() - started)
    barrier(info)
    return StageResult(Path(cfg.run_dir), last, stopped=False)


def _check_run_folder(run_dir: str, resume: bool) -> None:
    if not resume and has_checkpoint(run_dir):
        raise ConfigError(f"{run_dir} already holds a run: pass resume=True (--resume) or choose a new run folder")


def _end_of_epoch(cfg, run, model, train_set, test_set, mean, std, device, info, epoch, losses,
                  epoch_seconds, step, callbacks) -> dict:
    if not info.is_main:
        return {}
    train_emb = embed_clips(model, train_set, mean, std, device)
    test_emb = embed_clips(model, test_set, mean, std, device)
    m = embedding_metrics(train_emb, train_set.labels.numpy(), test_emb, test_set.labels.numpy(), cfg.p)
    row = {"kind": "epoch", "step": step, "epoch": epoch, "loss": float(np.mean(losses)) if losses else None,
           "heldout_accuracy": m["heldout_accuracy"], "heldout_silhouette": m["heldout_silhouette"],
           "train_accuracy": m["train_accuracy"], "score_temperature": m["score_temperature"],
           "score_nll_crossfit": m["score_nll_crossfit"],
           "epoch_seconds": epoch_seconds}
    run.metrics(row)
    scatter = save_scatter(run.file("samples") / f"scatter_epoch{epoch:03d}.png", train_emb,
                           train_set.labels.numpy(), test_emb, test_set.labels.numpy(),
                           f"epoch {epoch}: held-out acc {m['heldout_accuracy']:.2f}, "
                           f"silhouette {m['heldout_silhouette']:.2f}")
    curves = run.plot_curves(["loss", "active", "d_pos", "d_neg"], "stage 1: triplet loss")
    run.log(f"epoch {epoch}: loss {row['loss']}, held-out accuracy {m['heldout_accuracy']:.3f}, "
            f"silhouette {m['heldout_silhouette']:.3f}, {epoch_seconds:.1f} s")
    callbacks.finished_epoch(epoch, {"scatter": scatter, "curves": curves})
    return row


def _finish(cfg, run, model, train_set, test_set, mean, std, device, info, step, seconds) -> dict:
    """Write encoder.safetensors, embeddings.safetensors and encoder.json (everything stage 2 needs)."""
    if not info.is_main:
        return {}
    from safetensors.torch import save

    train_emb = embed_clips(model, train_set, mean, std, device)
    test_emb = embed_clips(model, test_set, mean, std, device)
    m = embedding_metrics(train_emb, train_set.labels.numpy(), test_emb, test_set.labels.numpy(), cfg.p)
    state = {k: v.detach().cpu().contiguous() for k, v in unwrap(model).state_dict().items()}
    atomic_write_bytes(run.file(ENCODER_WEIGHTS), save(state))
    atomic_write_bytes(run.file(EMBEDDINGS_FILE), save({
        "train_embeddings": torch.as_tensor(train_emb), "train_labels": train_set.labels.clone(),
        "test_embeddings": torch.as_tensor(test_emb), "test_labels": test_set.labels.clone(),
    }, metadata={"train_names": json.dumps(train_set.names), "test_names": json.dumps(test_set.names)}))
    meta = {
        "eras": list(ERAS),
        "encoder": PRESETS[cfg.preset].to_dict()["encoder"],
        "preset": cfg.preset,
        "features": {"mean": mean.cpu().tolist(), "std": std.cpu().tolist()},
        "centroids": m["centroids"].tolist(),
        "score_temperature": m["score_temperature"],
        "distance_p": cfg.p,
        "metrics": {"heldout_accuracy": m["heldout_accuracy"], "heldout_silhouette": m["heldout_silhouette"],
                    "train_accuracy": m["train_accuracy"], "score_nll_crossfit": m["score_nll_crossfit"],
                    "score_nll_uniform": math.log(len(ERAS)), "steps": step, "train_seconds": seconds,
                    "train_clips": len(train_set), "heldout_clips": len(test_set)},
        "options": cfg.to_dict(),
    }
    atomic_write_json(run.file(ENCODER_META), meta)
    run.log(f"finished: held-out accuracy {m['heldout_accuracy']:.3f}, silhouette {m['heldout_silhouette']:.3f}")
    return meta["metrics"]


def load_encoder_run(run_dir: str | Path, device="cpu") -> tuple[AudioEncoder, dict]:
    """(encoder in eval mode, encoder.json contents) of a finished stage 1 run."""
    from safetensors.torch import load_file

    run_dir, meta = read_finished_run(run_dir, ENCODER_META, "encoder", "python -m train encoder ...")
    encoder = AudioEncoder(ModelConfigs.from_dict({"encoder": meta["encoder"]}).encoder)
    encoder.load_state_dict(load_file(str(run_dir / ENCODER_WEIGHTS)))
    return encoder.to(device).eval(), meta
