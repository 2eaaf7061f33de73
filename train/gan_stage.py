"""Stage 2: the conditional GAN that paints 64x64 images from a frozen encoder's era embeddings.

The encoder is frozen (eval mode, no gradients); the embeddings of all clips are computed once at the start
of a run. Training pairs follow the Musart rule (clip a{k} with images i{k}, i{k+K}, i{k+2K}, each also
mirrored: 6 pairs per clip). Budget: `epochs` passes over the pairs or `kimg` thousands of images shown to D,
so two recipes can get exactly the same budget. See `train.config.GanStageConfig` for the two recipes.

Run folder: options.json, log.txt, metrics.jsonl, samples/grid_*.png (rows = eras, held-out clips),
curves.png, checkpoint.pt (resumable), and at the end generator.safetensors (EMA weights when the recipe keeps
an EMA) + gan.json.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DistributedSampler

from mvnet import ERAS
from mvnet.models import PRESETS, Discriminator, DiscriminatorConfig, Generator, GeneratorConfig, ModelConfigs
from train.augment import diff_augment, parse_policy
from train.checkpoint import (
    has_checkpoint,
    load_checkpoint,
    restore_rng_after_resume,
    save_checkpoint,
    seed_everything,
)
from train.config import Callbacks, ConfigError, GanStageConfig, StageResult
from train.datasets import PaintingPairDataset
from train.distributed import any_rank, barrier, distributed_context, mean_over_ranks, wrap
from train.encoder_stage import embed_clips, load_corpus, load_encoder_run
from train.losses import bce_d_loss, bce_g_loss, hinge_d_loss, hinge_g_loss, mode_seeking_loss
from train.runs import RunFolder, atomic_write_bytes, atomic_write_json, read_finished_run

GENERATOR_WEIGHTS = "generator.safetensors"
GAN_META = "gan.json"


# ---------------------------------------------------------------------------------------------- models
def recipe_models(recipe: str, preset: str, era_classes: int = 0,
                  era_projection: bool = False) -> tuple[GeneratorConfig, DiscriminatorConfig]:
    """Architectures of a recipe at a preset's widths.

    paper: the report's G (conditioned at its input only, InstanceNorm, no FiLM) and D (unconditional,
    BatchNorm, no spectral norm). ours: FiLM in every G block, projection D with spectral norm, and an era
    classifier head on D when era_classes > 0.
    """
    g, d = PRESETS[preset].generator, PRESETS[preset].discriminator
    if recipe == "paper":
        return (dataclasses.replace(g, norm="instance", film=False),
                dataclasses.replace(d, conditional=False, spectral_norm=False, batch_norm=True, era_classes=0))
    return (dataclasses.replace(g, film=True),
            dataclasses.replace(d, conditional=True, spectral_norm=True, batch_norm=False, era_classes=era_classes,
                                era_projection=era_projection and era_classes > 0))


def uses_eras(cfg: GanStageConfig) -> bool:
    """Whether D learns anything about eras (the AC-GAN term or the era projection)."""
    return cfg.recipe == "ours" and bool(cfg.era_weight or cfg.era_projection)


# ---------------------------------------------------------------------------------------------- data
def within_era_spread(embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(D,) pooled within-era standard deviation of the embeddings (scale of conditioning augmentation)."""
    variances = [embeddings[labels == e].var(0, unbiased=False) for e in labels.unique() if (labels == e).sum() > 1]
    if not variances:
        return torch.ones(embeddings.shape[1])
    return torch.stack(variances).mean(0).sqrt()


def sample_conditions(test_emb: torch.Tensor, test_labels: torch.Tensor, train_emb: torch.Tensor,
                      train_labels: torch.Tensor, per_era: int) -> torch.Tensor:
    """(5 * per_era, D) fixed conditions for sample grids: held-out clips of each era (training clips when an
    era has no held-out clip), one row per era."""
    rows = []
    for e in range(len(ERAS)):
        pool = test_emb[test_labels == e]
        if len(pool) == 0:
            pool = train_emb[train_labels == e]
        if len(pool) == 0:
            pool = torch.zeros(1, train_emb.shape[1])
        rows.append(pool[torch.arange(per_era) % len(pool)])
    return torch.cat(rows)


class EMA:
    """Exponential moving average of G's parameters; BatchNorm buffers are copied (as in StyleGAN2-ADA)."""

    def __init__(self, generator: nn.Module):
        self.model = copy.deepcopy(generator).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, generator: nn.Module, beta: float) -> None:
        for p_ema, p in zip(self.model.parameters(), generator.parameters(), strict=True):
            p_ema.copy_(p.detach().lerp(p_ema, beta))
        for b_ema, b in zip(self.model.buffers(), generator.buffers(), strict=True):
            b_ema.copy_(b)


def ema_beta(cfg: GanStageConfig, batch_images: int, images_shown: int) -> float:
    half_life = cfg.ema_kimg * 1000.0
    if cfg.ema_rampup:
        half_life = min(half_life, images_shown * cfg.ema_rampup)
    return 0.5 ** (batch_images / max(half_life, 1e-8))


# ---------------------------------------------------------------------------------------------- the stage
def train_gan(cfg: GanStageConfig, callbacks: Callbacks | None = None) -> StageResult:
    """Train (or resume) stage 2 into cfg.run_dir; returns StageResult(run_dir, final metrics, stopped)."""
    cfg.validate()
    cfg = cfg.resolved()
    callbacks = callbacks or Callbacks()
    with distributed_context(cfg.device) as info:
        return _run(cfg, callbacks, info)


def _run(cfg: GanStageConfig, callbacks: Callbacks, info) -> StageResult:
    if not cfg.resume and has_checkpoint(cfg.run_dir):
        raise ConfigError(f"{cfg.run_dir} already holds a run: pass resume=True (--resume) or choose a new run folder")
    run = RunFolder(cfg.run_dir, writer=info.is_main)
    run.write_options({"stage": "gan", **cfg.to_dict()})  # on resume: the options now in force
    device = info.device
    seed_everything(cfg.seed + info.rank)

    # Frozen encoder: every clip's embedding, once.
    encoder, enc_meta = load_encoder_run(cfg.encoder_run, device)
    encoder.requires_grad_(False)
    mean = torch.tensor(enc_meta["features"]["mean"], device=device)
    std = torch.tensor(enc_meta["features"]["std"], device=device)
    g_cfg, d_cfg = recipe_models(cfg.recipe, cfg.preset, uses_eras(cfg) * len(ERAS), bool(cfg.era_projection))
    data = load_corpus(cfg.data_root, cfg.cache_dir, image_size=g_cfg.image_size, device=device, log=run.log)
    (train_clips, train_split), (test_clips, _) = data["training"], data["testing"]
    del data
    train_emb = torch.as_tensor(embed_clips(encoder, train_clips, mean, std, device))
    test_emb = torch.as_tensor(embed_clips(encoder, test_clips, mean, std, device))
    del encoder
    pairs = PaintingPairDataset(train_split, mirror=True)  # images (M, 3, S, S) uint8, pairs (P, 2)
    if len(pairs.pairs) == 0:
        raise ConfigError(f"no (audio, image) pairs in {cfg.data_root}/training: the GAN needs paintings")
    train_clips.features = test_clips.features = None  # only the embeddings are needed from here on
    spread = within_era_spread(train_emb, train_clips.labels)
    sample_cond = sample_conditions(test_emb, test_clips.labels, train_emb, train_clips.labels, cfg.samples_per_era)
    train_emb, spread = train_emb.to(device), spread.to(device)
    train_labels = train_clips.labels.to(device)
    n_items = len(pairs)  # each pair also mirrored
    run.log(f"stage 2 recipe {cfg.recipe} on {device} x{info.world_size}: {len(pairs.pairs)} pairs "
            f"({n_items} with mirrors), {len(pairs.images)} images, within-era spread {spread.mean():.3f}")

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    G, D = Generator(g_cfg).to(device), Discriminator(d_cfg).to(device)
    ema = EMA(G) if cfg.ema_kimg else None
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=tuple(cfg.betas))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=tuple(cfg.betas))
    seed_everything(cfg.seed + info.rank)

    step, epoch, position, images_shown, seconds_before = 0, 0, 0, 0, 0.0
    if cfg.resume and has_checkpoint(cfg.run_dir):
        state = load_checkpoint(cfg.run_dir, map_location=device)
        G.load_state_dict(state["G"])
        D.load_state_dict(state["D"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        if ema is not None:
            ema.model.load_state_dict(state["G_ema"])
        step, epoch, position, images_shown = state["step"], state["epoch"], state["position"], state["images_shown"]
        seconds_before = float(state.get("train_seconds", 0.0))
        restore_rng_after_resume(state, cfg.seed, info.rank)
        run.truncate_metrics(step)
        run.log(f"resumed at step {step} ({images_shown / 1000:.2f} kimg)")
    G_train, D_train = wrap(G, info), wrap(D, info)

    batch_images = cfg.batch_size * info.world_size  # images shown to D per step, all ranks together
    total_images = int(cfg.kimg * 1000) if cfg.kimg is not None else cfg.epochs * n_items
    total_steps = math.ceil(total_images / batch_images)
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    policy = parse_policy(cfg.diffaugment)
    sampler = DistributedSampler(range(n_items), num_replicas=info.world_size, rank=info.rank, shuffle=True,
                                 seed=cfg.seed, drop_last=True)
    steps_per_epoch = len(sampler) // cfg.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(f"batch_size {cfg.batch_size} x {info.world_size} process(es) is larger than the "
                          f"{n_items} training pairs")
    snapshot_every = (int(cfg.snapshot_kimg * 1000 / batch_images) if cfg.snapshot_kimg else steps_per_epoch)
    snapshot_every = max(1, snapshot_every)
    conditional = d_cfg.conditional

    def checkpoint():
        if info.is_main:
            save_checkpoint(cfg.run_dir, {
                "G": G.state_dict(), "D": D.state_dict(), "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
                "G_ema": ema.model.state_dict() if ema is not None else {}, "step": step, "epoch": epoch,
                "position": position, "images_shown": images_shown, "stage": "gan", "recipe": cfg.recipe,
                "train_seconds": seconds_before + time.time() - started})

    def snapshot():
        if not info.is_main:
            return {}
        path = save_sample_grid(ema.model if ema else G, sample_cond, cfg, run.file("samples"), images_shown)
        curves = run.plot_curves(["loss_d", "loss_g", "mode_seeking", "d_real", "d_fake"],
                                 f"stage 2 ({cfg.recipe})")
        return {"samples": path, "curves": curves}

    started, window_started, window_images = time.time(), time.time(), 0
    sums: dict[str, float] = {}
    while step < total_steps:
        sampler.set_epoch(epoch)
        order = torch.as_tensor(list(iter(sampler)))
        while position < steps_per_epoch and step < total_steps:
            if any_rank(callbacks.stop_requested(), info):
                checkpoint()
                run.log(f"stopped at step {step}; checkpoint written")
                return StageResult(Path(cfg.run_dir), {"images_shown": images_shown, "steps": step}, stopped=True)
            items = order[position * cfg.batch_size:(position + 1) * cfg.batch_size]
            stats = _train_step(cfg, items, pairs, train_emb, train_labels, spread, G, D, G_train, D_train,
                                opt_g, opt_d, policy, conditional, device)
            position += 1
            step += 1
            images_shown += batch_images
            window_images += batch_images
            if ema is not None:
                ema.update(G, ema_beta(cfg, batch_images, images_shown))
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v
            if step % 10 == 0 or step == total_steps:
                n = (step - 1) % 10 + 1
                row = mean_over_ranks({k: v / n for k, v in sums.items()}, info)
                sums = {}
                elapsed = time.time() - window_started
                row["images_per_second"] = window_images / max(elapsed, 1e-9)
                window_started, window_images = time.time(), 0
                run.metrics({"kind": "step", "step": step, "epoch": epoch, "kimg": images_shown / 1000, **row})
                callbacks.report(step / total_steps, f"GAN ({cfg.recipe}) {images_shown / 1000:.1f}/"
                                 f"{total_images / 1000:.1f} kimg", row)
            if step % snapshot_every == 0:
                artifacts = snapshot()
                run.log(f"step {step}, {images_shown / 1000:.2f} kimg, {time.time() - started:.0f} s")
                callbacks.finished_epoch(epoch, artifacts)
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                checkpoint()
        if position >= steps_per_epoch:
            epoch, position = epoch + 1, 0
    seconds = seconds_before + time.time() - started  # training time over all resumed segments
    snapshot()
    checkpoint()
    metrics = _finish(cfg, run, G, ema, g_cfg, d_cfg, info, step, images_shown, seconds, enc_meta)
    barrier(info)
    return StageResult(Path(cfg.run_dir), metrics, stopped=False)


def _train_step(cfg, items, pairs: PaintingPairDataset, train_emb, train_labels, spread, G, D, G_train, D_train,
                opt_g, opt_d, policy, conditional, device) -> dict:
    """One D update then one G update on a batch of pair items (index into pairs x {plain, mirrored}).

    With era_weight > 0 (AC-GAN): D also learns the era of each real painting, and G is asked to paint images
    D classifies as the era of the clip it was conditioned on. The embedding alone carries the era only
    loosely (clips of neighbouring eras overlap), so without this term G learns the era weakly.
    """
    n_pairs = len(pairs.pairs)
    pair_rows = torch.as_tensor(pairs.pairs)[items % n_pairs]
    mirrored = items >= n_pairs
    real = pairs.images[pair_rows[:, 1]].to(device).float().div_(127.5).sub_(1.0)
    real = torch.where(mirrored.to(device)[:, None, None, None], real.flip(3), real)
    cond = train_emb[pair_rows[:, 0].to(device)]
    eras = train_labels[pair_rows[:, 0].to(device)]
    if cfg.cond_sigma:
        cond = cond + cfg.cond_sigma * spread * torch.randn_like(cond)
    b = len(items)
    noise_dim = G.cfg.noise_dim

    # Discriminator: real and fake as two forward/backward passes (BatchNorm statistics kept apart, as DCGAN).
    D.requires_grad_(True)
    with torch.no_grad():
        fake = G(cond, torch.randn(b, noise_dim, device=device))
    d_cond = cond if conditional else None
    opt_d.zero_grad(set_to_none=True)
    stats = {}
    with_eras = uses_eras(cfg)
    era_kwargs = {"with_eras": True, "eras": eras} if with_eras else {}
    d_real, era_real = _d_outputs(D_train(diff_augment(real, policy), d_cond, **era_kwargs), with_eras)
    loss_real = (hinge_d_loss(d_real, d_real)[0] if cfg.recipe == "ours"
                 else bce_d_loss(d_real, d_real, cfg.label_smoothing)[0])
    if cfg.era_weight:  # real paintings only: D never learns to classify G's images, so G cannot game it that way
        era_loss = nn.functional.cross_entropy(era_real, eras)
        loss_real = loss_real + cfg.era_weight * era_loss
        stats.update(era_d=float(era_loss.detach()),
                     era_real_acc=float((era_real.argmax(1) == eras).float().mean()))
    loss_real.backward()
    d_fake, era_fake = _d_outputs(D_train(diff_augment(fake, policy), d_cond, **era_kwargs), with_eras)
    loss_fake = (hinge_d_loss(d_fake, d_fake)[1] if cfg.recipe == "ours"
                 else bce_d_loss(d_fake, d_fake, cfg.label_smoothing)[1])
    if with_eras:  # zero-weight use of the era head keeps DDP's gradient buckets identical in both passes
        loss_fake = loss_fake + 0.0 * era_fake.sum()
    loss_fake.backward()
    opt_d.step()

    # Generator: D is used unwrapped and frozen, so no D gradients are computed or synchronised.
    D.requires_grad_(False)
    g_cond, g_eras = cond, eras
    if cfg.mode_seeking:  # pairs share a condition, not the noise
        g_cond, g_eras = torch.cat([cond[: b // 2], cond[: b // 2]]), torch.cat([eras[: b // 2], eras[: b // 2]])
    z = torch.randn(b, noise_dim, device=device)
    fake = G_train(g_cond, z)
    g_kwargs = {"with_eras": True, "eras": g_eras} if with_eras else {}
    logits, era_logits = _d_outputs(D(diff_augment(fake, policy), g_cond if conditional else None, **g_kwargs),
                                    with_eras)
    loss_g = hinge_g_loss(logits) if cfg.recipe == "ours" else bce_g_loss(logits)
    if cfg.era_weight:
        era_g = nn.functional.cross_entropy(era_logits, g_eras)
        loss_g = loss_g + cfg.era_weight * era_g
        stats.update(era_g=float(era_g.detach()),
                     era_fake_acc=float((era_logits.argmax(1) == g_eras).float().mean()))
    if cfg.mode_seeking:
        ms = mode_seeking_loss(fake, z)
        loss_g = loss_g + cfg.mode_seeking * ms
        stats["mode_seeking"] = float(ms.detach())
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    D.requires_grad_(True)
    stats.update(loss_d=float((loss_real + loss_fake).detach()), loss_g=float(loss_g.detach()),
                 d_real=float(d_real.detach().mean()), d_fake=float(d_fake.detach().mean()))
    return stats


def _d_outputs(out, with_eras: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(real/fake logits, era logits or None) from a D call with or without with_eras."""
    return out if with_eras else (out, None)


@torch.no_grad()
def paint_grid(generator: nn.Module, conditions: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Images (N, 3, 64, 64) in [0, 1] for conditions (N, D) with fixed noise, generator in eval mode."""
    was_training = generator.training
    generator.eval()
    device = next(generator.parameters()).device
    noise = torch.randn(len(conditions), generator.cfg.noise_dim, generator=torch.Generator().manual_seed(seed))
    images = generator(conditions.to(device), noise.to(device)).float().cpu()
    generator.train(was_training)
    return ((images + 1) / 2).clamp(0, 1)


def save_sample_grid(generator, conditions, cfg, folder: Path, images_shown: int) -> Path:
    from mvnet.pipeline import grid_image

    image = grid_image(paint_grid(generator, conditions, cfg.seed), nrow=cfg.samples_per_era)
    path = folder / f"grid_{images_shown // 1000:05d}kimg.png"
    image.save(folder / ".grid.tmp.png")
    (folder / ".grid.tmp.png").replace(path)
    image.save(folder / ".latest.tmp.png")
    (folder / ".latest.tmp.png").replace(folder / "latest.png")
    return path


def _finish(cfg, run, G, ema, g_cfg, d_cfg, info, step, images_shown, seconds, enc_meta) -> dict:
    metrics = {"steps": step, "images_shown": images_shown, "kimg": images_shown / 1000, "train_seconds": seconds,
               "images_per_second": images_shown / max(seconds, 1e-9)}
    if not info.is_main:
        return metrics
    from safetensors.torch import save

    final = ema.model if ema is not None else G
    state = {k: v.detach().cpu().contiguous() for k, v in final.state_dict().items()}
    atomic_write_bytes(run.file(GENERATOR_WEIGHTS), save(state))
    atomic_write_json(run.file(GAN_META), {
        "recipe": cfg.recipe, "generator": dataclasses.asdict(g_cfg), "discriminator": dataclasses.asdict(d_cfg),
        "encoder_run": str(cfg.encoder_run), "ema": ema is not None, "metrics": metrics, "options": cfg.to_dict(),
        "encoder_metrics": enc_meta.get("metrics", {}),
    })
    run.log(f"finished: {images_shown / 1000:.1f} kimg in {seconds:.0f} s ({metrics['images_per_second']:.1f} img/s)")
    return metrics


def load_gan_run(run_dir: str | Path, device="cpu") -> tuple[Generator, dict]:
    """(generator in eval mode, gan.json contents) of a finished stage 2 run."""
    from safetensors.torch import load_file

    run_dir, meta = read_finished_run(run_dir, GAN_META, "GAN", "python -m train gan ...")
    generator = Generator(ModelConfigs.from_dict({"generator": meta["generator"]}).generator)
    generator.load_state_dict(load_file(str(run_dir / GENERATOR_WEIGHTS)))
    return generator.to(device).eval(), meta
