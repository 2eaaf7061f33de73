"""The era judge: a small CNN trained on the corpus's real paintings, used to score generated ones.

No Inception weights can be downloaded here, so MVNet trains its own feature extractor. The judge is
trained once per corpus and cached, so every run evaluated on that corpus is judged by the same network.

    paintings = load_paintings(root, "training")      # deduplicated real paintings, uint8 (N, 3, 64, 64)
    judge, info = load_or_train_judge(root, "cache/judge")
    logits = judge(images)                             # images (B, 3, 64, 64) in [0, 1] -> (B, 5)
    features = judge.features(images)                  # (B, 128) penultimate features for KID / diversity

Why deduplicate: the Musart layout pairs every clip with 3 images, and an era with few paintings reuses
the same painting under several i* names. Without deduplication the held-out accuracy would count
paintings the judge was trained on. Paintings are hashed after decoding and resizing to 64x64, so the
same picture stored twice (any file name, any encoding) counts once; held-out copies of a training
painting are dropped from the held-out set.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mvnet import ERAS
from mvnet.files import atomic_write_bytes
from mvnet.pipeline import default_device
from train.datasets import MusartCorpus, MusartError, SplitData, read_musart

JUDGE_FORMAT = 1  # bump when the architecture or the data preparation changes: old caches are not reused
IMAGE_SIZE = 64
WEIGHTS_FILE, INFO_FILE = "judge.safetensors", "judge.json"


class JudgeError(RuntimeError):
    """The corpus has no usable paintings for the judge, or a cached judge is unreadable."""


# -------------------------------------------------------------------------------------------- data


@dataclass
class Paintings:
    """Real paintings of one split, deduplicated.

    images: uint8 (N, 3, 64, 64); labels: int64 (N,) era index; hashes: N content hashes (hex);
    files: how many image files were read; duplicates: how many of them repeated an earlier painting.
    """

    images: np.ndarray
    labels: np.ndarray
    hashes: list[str]
    files: int
    duplicates: int

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self, n_eras: int = len(ERAS)) -> list[int]:
        return np.bincount(self.labels, minlength=n_eras).tolist()

    def without(self, hashes: set[str]) -> tuple[Paintings, int]:
        """These paintings minus those whose hash is in `hashes`; also returns how many were dropped."""
        keep = np.array([h not in hashes for h in self.hashes], dtype=bool)
        kept = Paintings(self.images[keep], self.labels[keep], [h for h, k in zip(self.hashes, keep) if k],
                         self.files, self.duplicates)
        return kept, int((~keep).sum())


def paintings_of(split: SplitData, eras=ERAS) -> Paintings:
    """The deduplicated real paintings of one split read by train.datasets.read_musart.

    Images come at the reader's size exactly as the GAN stage sees them; the era is the image's folder.
    Raises JudgeError when an era has no painting.
    """
    images, labels, hashes, seen = [], [], [], set()
    for pixels, path in zip(split.images, split.image_paths):
        digest = hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        images.append(pixels.transpose(2, 0, 1))
        labels.append(eras.index(Path(path).parent.name))
        hashes.append(digest)
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(eras))
    if len(images) == 0 or (counts == 0).any():
        missing = [era for era, c in zip(eras, counts) if c == 0]
        raise JudgeError(f"No readable paintings (i0, i1, ...) in the {split.name} split for {', '.join(missing)}: "
                         "the judge needs every era.")
    return Paintings(np.ascontiguousarray(np.stack(images)), np.asarray(labels, dtype=np.int64), hashes,
                     len(split.image_paths), len(split.image_paths) - len(hashes))


def read_corpus(root: str | Path | MusartCorpus, image_size: int = IMAGE_SIZE) -> MusartCorpus:
    """A MusartCorpus, read quietly from a folder (or passed through); JudgeError when it has no test split."""
    corpus = root if isinstance(root, MusartCorpus) else read_musart(root, image_size=image_size, log=None)
    try:
        corpus.split("testing")
    except MusartError as e:
        raise JudgeError(f"{e} Evaluation needs held-out clips and paintings in {Path(corpus.root) / 'testing'}.") from e
    return corpus


def load_paintings(root: str | Path | MusartCorpus, split: str) -> Paintings:
    """The deduplicated real paintings of one split ("training" or "testing") of a Musart-layout corpus."""
    return paintings_of(read_corpus(root).split(split))


# -------------------------------------------------------------------------------------------- model


@dataclass
class JudgeConfig:
    """How the judge is built and trained (part of the cache key)."""

    widths: tuple[int, ...] = (16, 32, 64, 128)
    dropout: float = 0.3
    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    # "loss": inverse-frequency loss weights; "sampler": class-balanced sampling. On a validation carve-out of
    # the starter corpus's training paintings, "loss" gave balanced accuracy 0.64 (renaissance 0.60) and
    # "sampler" 0.61 (renaissance 0.25: ~9 repeats per epoch of 130 paintings are memorised).
    balance: str = "loss"
    min_crop: float = 0.75  # random crops keep at least this fraction of the side
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> JudgeConfig:
        d = dict(d)
        if "widths" in d:
            d["widths"] = tuple(d["widths"])
        return cls(**d)


def _conv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class EraJudge(nn.Module):
    """VGG-style CNN: conv -> pool, then (conv, conv, pool) per width -> global average -> linear.

    forward(images (B, 3, 64, 64) in [0, 1]) -> logits (B, n_eras); features(images) -> (B, widths[-1]).
    """

    def __init__(self, widths: tuple[int, ...] = JudgeConfig.widths, n_eras: int = len(ERAS), dropout: float = 0.3):
        super().__init__()
        layers = _conv(3, widths[0]) + [nn.MaxPool2d(2)]
        for cin, cout in zip(widths[:-1], widths[1:]):
            layers += _conv(cin, cout) + _conv(cout, cout) + [nn.MaxPool2d(2)]
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(widths[-1], n_eras)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features (B, widths[-1]) of images (B, 3, 64, 64) in [0, 1]."""
        return self.body((images - 0.5) / 0.25)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(images)))


def augment(images: torch.Tensor, generator: torch.Generator, min_crop: float) -> torch.Tensor:
    """Random horizontal flip + random crop (side in [min_crop, 1]) resized back, as one affine warp.

    images: (B, 3, H, W) float in [0, 1]. Colours are left alone: palette is part of an era's style.
    """
    b = images.shape[0]
    scale = min_crop + (1 - min_crop) * torch.rand(b, generator=generator)
    flip = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0)
    shift = (1 - scale)[:, None] * (2 * torch.rand(b, 2, generator=generator) - 1)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = scale * flip, scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta.to(images.device), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _to_float(images_uint8: np.ndarray | torch.Tensor, device) -> torch.Tensor:
    return torch.as_tensor(images_uint8).to(device).float().div_(255)


def train_judge(paintings: Paintings, cfg: JudgeConfig | None = None, device=None,
                progress: Callable[[float, str], None] | None = None) -> EraJudge:
    """Train an EraJudge on real paintings (uint8 (N, 3, 64, 64), labels (N,)); returns it in eval mode.

    Class imbalance (renaissance has ~10x fewer paintings) is handled by `cfg.balance`: a class-balanced
    sampler (each era equally likely per draw) or inverse-frequency loss weights.
    """
    cfg = cfg or JudgeConfig()
    device = torch.device(device) if device is not None else default_device()
    torch.manual_seed(cfg.seed)
    rng = torch.Generator().manual_seed(cfg.seed)
    n_eras = len(ERAS)
    counts = torch.bincount(torch.as_tensor(paintings.labels), minlength=n_eras).float()
    if (counts == 0).any():
        raise JudgeError(f"The judge needs paintings of every era; counts per era: {counts.int().tolist()}")
    model = EraJudge(cfg.widths, n_eras, cfg.dropout).to(device)
    images = torch.as_tensor(paintings.images)
    labels = torch.as_tensor(paintings.labels)
    n = len(labels)
    steps_per_epoch = max(1, math.ceil(n / cfg.batch_size))
    total_steps = cfg.epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total_steps, pct_start=0.15)
    if cfg.balance == "sampler":
        draw_weights, loss_weights = (1.0 / counts)[labels], None
    elif cfg.balance == "loss":
        draw_weights, loss_weights = None, (counts.sum() / (n_eras * counts)).to(device)
    else:
        raise ValueError(f"balance must be 'sampler' or 'loss', got {cfg.balance!r}")

    model.train()
    step = 0
    for epoch in range(cfg.epochs):
        if draw_weights is not None:
            order = torch.multinomial(draw_weights, n, replacement=True, generator=rng)
        else:
            order = torch.randperm(n, generator=rng)
        running = 0.0
        for start in range(0, n, cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            if len(idx) < 2:  # BatchNorm needs two items
                continue
            x = augment(_to_float(images[idx], device), rng, cfg.min_crop)
            loss = F.cross_entropy(model(x), labels[idx].to(device), weight=loss_weights,
                                   label_smoothing=cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step < total_steps - 1:
                schedule.step()
            step += 1
            running += loss.item() * len(idx)
        if progress is not None:
            progress((epoch + 1) / cfg.epochs, f"judge epoch {epoch + 1}/{cfg.epochs}: loss {running / n:.3f}")
    return model.eval()


@torch.inference_mode()
def judge_outputs(judge: EraJudge, images, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(logits (N, n_eras), features (N, D)) as float64 numpy for images uint8 or float in [0, 1] (N, 3, 64, 64)."""
    device = next(judge.parameters()).device
    images = torch.as_tensor(images)
    logits, features = [], []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size].to(device)
        batch = batch.float().div_(255) if batch.dtype == torch.uint8 else batch.float()
        if batch.shape[-2:] != (IMAGE_SIZE, IMAGE_SIZE):
            batch = F.interpolate(batch, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", antialias=True,
                                  align_corners=False)
        f = judge.features(batch)
        features.append(f.double().cpu())
        logits.append(judge.head(f).double().cpu())
    if not features:
        width = judge.head.in_features
        return np.zeros((0, judge.head.out_features)), np.zeros((0, width))
    return torch.cat(logits).numpy(), torch.cat(features).numpy()


def classification_report(predicted, labels, eras=ERAS) -> dict:
    """Accuracy, balanced accuracy (mean of per-era recalls over eras present) and per-era accuracy."""
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    per_era, counts = {}, {}
    for k, era in enumerate(eras):
        mask = labels == k
        counts[era] = int(mask.sum())
        per_era[era] = float((predicted[mask] == k).mean()) if mask.any() else None
    present = [v for v in per_era.values() if v is not None]
    return {
        "accuracy": float((predicted == labels).mean()) if len(labels) else None,
        "balanced_accuracy": float(np.mean(present)) if present else None,
        "per_era": per_era,
        "count": counts,
    }


# -------------------------------------------------------------------------------------------- cache


def data_key(training: Paintings, testing: Paintings, cfg: JudgeConfig) -> str:
    """Short hash of the paintings (content and era) and the judge's config: the cache folder's name."""
    h = hashlib.sha256()
    h.update(json.dumps({"format": JUDGE_FORMAT, "config": cfg.to_dict(), "eras": list(ERAS)}, sort_keys=True).encode())
    for name, p in (("training", training), ("testing", testing)):
        h.update(name.encode())
        for digest, label in sorted(zip(p.hashes, p.labels.tolist())):
            h.update(f"{digest}:{label};".encode())
    return h.hexdigest()[:16]


@dataclass
class JudgeBundle:
    """A trained judge with the real paintings it was trained and tested on, and its report."""

    judge: EraJudge
    info: dict
    training: Paintings
    testing: Paintings
    folder: Path | None = None
    cached: bool = False
    extra: dict = field(default_factory=dict)


def save_judge(judge: EraJudge, info: dict, folder: Path) -> None:
    """judge.safetensors + judge.json, each written atomically (the JSON last: it marks a complete folder)."""
    from safetensors.torch import save

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in judge.state_dict().items()}
    atomic_write_bytes(folder / WEIGHTS_FILE, save(state))
    atomic_write_bytes(folder / INFO_FILE, json.dumps(info, indent=1).encode())


def load_judge(folder: str | Path, device=None) -> tuple[EraJudge, dict]:
    """Load a cached judge folder; raises JudgeError when it is incomplete or does not match its JSON."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        info = json.loads((folder / INFO_FILE).read_text())
        cfg = JudgeConfig.from_dict(info["config"])
        judge = EraJudge(cfg.widths, len(info["eras"]), cfg.dropout)
        judge.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    except (OSError, KeyError, TypeError, ValueError, RuntimeError, SafetensorError) as e:
        raise JudgeError(f"The cached judge in {folder} is unusable ({e}); delete the folder to retrain it.") from e
    device = torch.device(device) if device is not None else default_device()
    return judge.to(device).eval(), info


def load_or_train_judge(root: str | Path | MusartCorpus, judge_dir: str | Path, cfg: JudgeConfig | None = None, device=None,
                        progress: Callable[[float, str], None] | None = None) -> JudgeBundle:
    """The judge for corpus `root`: loaded from <judge_dir>/<data key>/ when cached, else trained and cached.

    The key covers the deduplicated paintings of both splits and the judge config, so every run evaluated on
    the same corpus gets the same judge, and a changed corpus gets a new one.
    """
    cfg = cfg or JudgeConfig()
    corpus = read_corpus(root)
    training, testing_all = paintings_of(corpus.split("training")), paintings_of(corpus.split("testing"))
    testing, overlap = testing_all.without(set(training.hashes))
    if len(testing) == 0:
        raise JudgeError(f"Every held-out painting in {Path(corpus.root) / 'testing'} also appears in training.")
    folder = Path(judge_dir) / data_key(training, testing, cfg)
    if (folder / INFO_FILE).is_file():
        judge, info = load_judge(folder, device)
        return JudgeBundle(judge, info, training, testing, folder, cached=True)

    started = time.perf_counter()
    judge = train_judge(training, cfg, device, progress)
    seconds = time.perf_counter() - started
    logits, _ = judge_outputs(judge, testing.images)
    report = classification_report(logits.argmax(1), testing.labels)
    train_logits, _ = judge_outputs(judge, training.images)
    info = {
        "format": JUDGE_FORMAT,
        "key": folder.name,
        "data_root": str(corpus.root),
        "eras": list(ERAS),
        "config": cfg.to_dict(),
        "train_seconds": round(seconds, 1),
        "device": str(next(judge.parameters()).device),
        "parameters": sum(p.numel() for p in judge.parameters()),
        "training": {"files": training.files, "duplicates": training.duplicates, "paintings": len(training),
                     "per_era": dict(zip(ERAS, training.counts())),
                     "accuracy": float((train_logits.argmax(1) == training.labels).mean())},
        "testing": {"files": testing_all.files, "duplicates": testing_all.duplicates,
                    "also_in_training": overlap, "paintings": len(testing),
                    "per_era": dict(zip(ERAS, testing.counts()))},
        "held_out": report,
    }
    save_judge(judge, info, folder)
    return JudgeBundle(judge, info, training, testing, folder, cached=False)
