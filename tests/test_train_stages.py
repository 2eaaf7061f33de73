"""Training stages end to end on a tiny synthetic corpus the test writes itself (Musart layout).

Audio: 8.91 s of tones whose pitch range and timbre depend on the era; images: 64x64 with era colours.
Covers stage 1 (batched and paper sampling), stage 2 (both recipes), --dry-run, exact resume, export ->
MVNet.from_pretrained, the CLI, and DDP with 2 CPU processes (torchrun, marked slow).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

from mvnet import ERAS
from mvnet.audio import CLIP_SAMPLES, SAMPLE_RATE
from train.config import Callbacks, ConfigError, EncoderStageConfig, GanStageConfig

ROOT = Path(__file__).resolve().parent.parent
TRAIN_CLIPS, TEST_CLIPS = 4, 2  # per era


def write_tiny_corpus(root: Path, seed: int = 0) -> Path:
    """<root>/{training,testing}/<era>/a{k}.wav + i{n}.png, 3 images per clip (the Musart pairing rule)."""
    rng = np.random.default_rng(seed)
    t = np.arange(CLIP_SAMPLES) / SAMPLE_RATE
    for split, k in (("training", TRAIN_CLIPS), ("testing", TEST_CLIPS)):
        for e, era in enumerate(ERAS):
            folder = root / split / era
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(k):
                base = 110.0 * 2 ** (e * 0.6 + rng.uniform(0, 0.3))
                notes = base * 2 ** (rng.integers(0, 12, size=18) / 12)
                note = notes[(t * 2).astype(int) % len(notes)]
                wave = sum(np.sin(2 * np.pi * note * h * t) / h ** (1 + 0.3 * e) for h in (1, 2, 3))
                wave = 0.2 * wave + 0.01 * rng.standard_normal(len(t))
                soundfile.write(folder / f"a{i}.wav", wave.astype(np.float32), SAMPLE_RATE)
            colour = np.array([(50 * e) % 256, 200 - 40 * e, 40 + 50 * e], dtype=np.float32)
            for n in range(3 * k):
                img = colour + rng.normal(0, 25, size=(64, 64, 3))
                img[:, : 8 * (e + 1)] *= 0.5  # an era-dependent dark band
                Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(folder / f"i{n}.png")
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_tiny_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def encoder_run(corpus, tmp_path_factory) -> Path:
    from train.encoder_stage import train_encoder

    run = tmp_path_factory.mktemp("runs") / "enc"
    cfg = EncoderStageConfig(data_root=str(corpus), run_dir=str(run), epochs=2, eras_per_batch=5, clips_per_era=2,
                             lr=1e-3, seed=0, device="cpu")
    seen = []
    result = train_encoder(cfg, Callbacks(epoch_end=lambda epoch, artifacts: seen.append((epoch, artifacts))))
    assert not result.stopped
    assert [epoch for epoch, _ in seen] == [1, 2]
    assert seen[-1][1]["scatter"].exists()
    return run


def test_encoder_stage_writes_a_complete_run(encoder_run):
    meta = json.loads((encoder_run / "encoder.json").read_text())
    assert len(meta["features"]["mean"]) == 128 and len(meta["centroids"]) == len(ERAS)
    assert meta["distance_p"] == 5.0 and meta["score_temperature"] > 0
    assert 0.0 <= meta["metrics"]["heldout_accuracy"] <= 1.0
    rows = [json.loads(line) for line in (encoder_run / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in rows if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert all(np.isfinite(r["loss"]) and "heldout_silhouette" in r for r in epochs)
    for name in ("options.json", "log.txt", "curves.png", "encoder.safetensors", "embeddings.safetensors"):
        assert (encoder_run / name).exists(), name
    assert json.loads((encoder_run / "options.json").read_text())["sampling"] == "semi-hard"  # the default


def test_encoder_separates_the_easy_synthetic_eras(corpus, tmp_path):
    """The synthetic eras differ in pitch and timbre: a few batch-hard steps must already separate them."""
    from train.encoder_stage import train_encoder

    cfg = EncoderStageConfig(data_root=str(corpus), run_dir=str(tmp_path / "enc"), epochs=5, clips_per_era=4,
                             lr=1e-2, device="cpu", augment=False)
    result = train_encoder(cfg)
    assert result.metrics["train_accuracy"] >= 0.8, result.metrics


def test_paper_sampling_and_semi_hard_run(corpus, tmp_path):
    from train.encoder_stage import paper_triplets, train_encoder

    labels = np.repeat(np.arange(5), 4)
    triplets = paper_triplets(labels, seed=0, epoch=0)
    assert len(triplets) == len(labels)
    assert all(labels[a] == labels[p] and a != p and labels[n] != labels[a] for a, p, n in triplets)
    for sampling in ("paper", "semi-hard"):
        cfg = EncoderStageConfig(data_root=str(corpus), run_dir=str(tmp_path / sampling), epochs=3,
                                 sampling=sampling, clips_per_era=2, device="cpu", max_steps=6)
        result = train_encoder(cfg)
        assert result.metrics["steps"] == 6


def test_batch_hard_loss_picks_hardest_pairs():
    from train.losses import batch_hard_triplet_loss

    x = torch.tensor([[0.0], [1.0], [5.0], [5.5]])
    y = torch.tensor([0, 0, 1, 1])
    out = batch_hard_triplet_loss(x, y, margin=3.0, p=5)
    # anchor 0: pos 1, neg 5 -> 1 - 5 + 3 < 0; anchor 1: pos 1, neg 4 -> 0; anchor 2: 0.5 - 4 + 3 < 0;
    # anchor 3: pos .5, neg 4.5 -> 0. All inactive.
    assert float(out["loss"]) == pytest.approx(0.0, abs=1e-4)
    out = batch_hard_triplet_loss(torch.tensor([[0.0], [2.0], [2.5], [9.0]]), y, margin=3.0, p=5)
    # anchor 1: pos 2, hardest neg 0.5 -> 4.5
    assert float(out["loss"]) > 1.0


@pytest.mark.parametrize("recipe", ["ours", "paper"])
def test_gan_stage_both_recipes(corpus, encoder_run, tmp_path, recipe):
    from train.gan_stage import train_gan

    run = tmp_path / recipe
    cfg = GanStageConfig(data_root=str(corpus), run_dir=str(run), encoder_run=str(encoder_run), recipe=recipe,
                         preset="cpu", batch_size=8, epochs=1, max_steps=4, device="cpu", samples_per_era=2)
    result = train_gan(cfg)
    assert result.metrics["steps"] == 4 and result.metrics["images_shown"] == 32
    meta = json.loads((run / "gan.json").read_text())
    assert meta["recipe"] == recipe
    assert meta["discriminator"]["conditional"] is (recipe == "ours")
    assert meta["generator"]["film"] is (recipe == "ours")
    assert meta["ema"] is (recipe == "ours")
    grid = Image.open(run / "samples" / "latest.png")
    assert grid.size[1] > 5 * 64  # one row per era
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows and all(np.isfinite(r["loss_d"]) for r in rows if r["kind"] == "step")


def test_gan_budget_in_kimg_is_the_same_for_both_recipes():
    a = GanStageConfig(recipe="ours", kimg=3.0).resolved()
    b = GanStageConfig(recipe="paper", kimg=3.0).resolved()
    assert (a.batch_size, b.batch_size) == (32, 15)
    assert a.kimg == b.kimg == 3.0
    assert b.lr_g == 2e-4 and b.lr_d == 5e-5 and b.label_smoothing == 0.2 and b.diffaugment == ""
    with pytest.raises(ConfigError, match="recipe"):
        GanStageConfig(recipe="stylegan").resolved()


def _stop_after(n):
    calls = {"n": 0}

    def should_stop():
        calls["n"] += 1
        return calls["n"] > n

    return Callbacks(should_stop=should_stop)


def _state(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def test_encoder_resume_is_exact(corpus, tmp_path):
    from train.encoder_stage import train_encoder

    base = dict(data_root=str(corpus), epochs=2, clips_per_era=2, lr=1e-3, device="cpu", checkpoint_every=0)
    train_encoder(EncoderStageConfig(run_dir=str(tmp_path / "full"), **base))
    stopped = train_encoder(EncoderStageConfig(run_dir=str(tmp_path / "cut"), **base), _stop_after(3))
    assert stopped.stopped and (tmp_path / "cut" / "checkpoint.pt").exists()
    with pytest.raises(ConfigError, match="resume"):
        train_encoder(EncoderStageConfig(run_dir=str(tmp_path / "cut"), **base))
    train_encoder(EncoderStageConfig(run_dir=str(tmp_path / "cut"), resume=True, **base))
    full, cut = _state(tmp_path / "full" / "encoder.safetensors"), _state(tmp_path / "cut" / "encoder.safetensors")
    assert full.keys() == cut.keys()
    for key in full:
        assert torch.equal(full[key], cut[key]), key


def test_gan_resume_is_exact(corpus, encoder_run, tmp_path):
    from train.gan_stage import train_gan

    base = dict(data_root=str(corpus), encoder_run=str(encoder_run), recipe="ours", batch_size=8, epochs=1,
                max_steps=6, device="cpu", samples_per_era=1, checkpoint_every=0)
    train_gan(GanStageConfig(run_dir=str(tmp_path / "full"), **base))
    assert train_gan(GanStageConfig(run_dir=str(tmp_path / "cut"), **base), _stop_after(2)).stopped
    result = train_gan(GanStageConfig(run_dir=str(tmp_path / "cut"), resume=True, **base))
    assert result.metrics["steps"] == 6
    full, cut = _state(tmp_path / "full" / "generator.safetensors"), _state(tmp_path / "cut" / "generator.safetensors")
    for key in full:
        assert torch.equal(full[key], cut[key]), key
    ckpt_full = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    ckpt_cut = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    for key in ckpt_full["D"]:
        assert torch.equal(ckpt_full["D"][key], ckpt_cut["D"][key]), key


def test_export_loads_and_paints(corpus, encoder_run, tmp_path):
    from mvnet.pipeline import MVNet
    from train.export import era_grids, export_run
    from train.gan_stage import train_gan

    gan_run = tmp_path / "gan"
    train_gan(GanStageConfig(data_root=str(corpus), run_dir=str(gan_run), encoder_run=str(encoder_run),
                             batch_size=8, max_steps=2, device="cpu", samples_per_era=1))
    out = export_run(encoder_run, gan_run, tmp_path / "weights")
    model = MVNet.from_pretrained(out, device="cpu")
    assert model.atlas is not None and len(model.atlas) == TRAIN_CLIPS * len(ERAS)
    emb = model.embed(str(corpus / "testing" / "modern" / "a0.wav"))
    images = model.paint(emb, n=4, seed=1)
    assert images.shape == (4, 3, 64, 64) and 0 <= float(images.min()) and float(images.max()) <= 1
    assert set(model.era_scores(emb)) == set(ERAS)
    grids = era_grids(out, tmp_path / "grids", encoder_run=encoder_run, n=4)
    assert sorted(grids) == sorted(ERAS) and all(p.exists() for p in grids.values())


def _cli(*args, env_extra=None, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "train", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_cli_dry_run_prints_resolved_config(tmp_path):
    out = _cli("gan", "--data", "x", "--run", str(tmp_path / "g"), "--encoder-run", "e", "--recipe", "paper",
               "--kimg", "2", "--dry-run")
    assert out.returncode == 0, out.stderr
    cfg = json.loads(out.stdout)
    assert cfg["batch_size"] == 15 and cfg["kimg"] == 2.0 and cfg["lr_d"] == 5e-5
    assert not (tmp_path / "g").exists()  # nothing trained, nothing written
    out = _cli("encoder", "--data", "x", "--run", str(tmp_path / "e"), "--sampling", "paper", "--dry-run")
    assert out.returncode == 0 and json.loads(out.stdout)["sampling"] == "paper"
    out = _cli("encoder", "--data", "x", "--run", "y", "--sampling", "random", "--dry-run")
    assert out.returncode == 2 and "sampling must be one of" in out.stderr


@pytest.mark.slow
def test_cli_trains_both_stages_and_exports(corpus, tmp_path):
    enc, gan, weights = tmp_path / "enc", tmp_path / "gan", tmp_path / "weights"
    out = _cli("encoder", "--data", str(corpus), "--run", str(enc), "--epochs", "1", "--clips-per-era", "2",
               "--device", "cpu", "--quiet")
    assert out.returncode == 0, out.stderr
    assert "heldout_accuracy" in json.loads(out.stdout.strip().splitlines()[-1])["metrics"]
    out = _cli("gan", "--data", str(corpus), "--run", str(gan), "--encoder-run", str(enc), "--batch-size", "8",
               "--max-steps", "2", "--device", "cpu", "--quiet")
    assert out.returncode == 0, out.stderr
    out = _cli("export", "--encoder-run", str(enc), "--gan-run", str(gan), "--out", str(weights), "--no-atlas")
    assert out.returncode == 0, out.stderr
    assert (weights / "config.json").exists() and (weights / "generator.safetensors").exists()


@pytest.mark.slow
def test_cli_all_trains_exports_and_the_weights_paint(corpus, tmp_path):
    """`python -m train all` for real (not --dry-run): both stages, export with the era atlas, then the mvnet
    CLI paints from the exported folder; a second `all` finds both stages finished and only re-exports."""
    runs, weights, song = tmp_path / "runs", tmp_path / "weights", corpus / "testing" / ERAS[2] / "a0.wav"
    out = _cli("all", "--data", str(corpus), "--runs", str(runs), "--out", str(weights), "--epochs", "1",
               "--kimg", "0.03", "--device", "cpu")
    assert out.returncode == 0, out.stderr
    assert (runs / "encoder" / "encoder.json").exists() and (runs / "gan_ours" / "gan.json").exists()
    config = json.loads((weights / "config.json").read_text())
    assert config["eras"] == list(ERAS) and (weights / "atlas.safetensors").exists()
    grid = tmp_path / "grid.png"
    painted = subprocess.run([sys.executable, "-m", "mvnet", "paint", str(song), "--weights", str(weights),
                              "--out", str(grid), "--n", "4"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert painted.returncode == 0, painted.stderr
    assert Image.open(grid).size[0] > 64
    before = (runs / "gan_ours" / "generator.safetensors").stat().st_mtime_ns
    again = _cli("all", "--data", str(corpus), "--runs", str(runs), "--out", str(weights), "--device", "cpu")
    assert again.returncode == 0, again.stderr
    assert (runs / "gan_ours" / "generator.safetensors").stat().st_mtime_ns == before


@pytest.mark.slow
def test_ddp_two_cpu_processes(corpus, tmp_path):
    """Both stages under torchrun with 2 gloo processes; only rank 0 writes."""
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun is not installed next to this python")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    common = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "train"]
    enc, gan = tmp_path / "enc", tmp_path / "gan"
    out = subprocess.run([*common, "encoder", "--data", str(corpus), "--run-dir", str(enc), "--epochs", "1",
                          "--clips-per-era", "2", "--eras-per-batch", "5", "--device", "cpu", "--quiet"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    meta = json.loads((enc / "encoder.json").read_text())
    assert meta["metrics"]["steps"] == 1  # 20 clips / (5 x 2) = 2 batches, one per rank
    out = subprocess.run([*common, "gan", "--data", str(corpus), "--run-dir", str(gan), "--encoder-run", str(enc),
                          "--batch-size", "4", "--max-steps", "3", "--device", "cpu", "--quiet"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    meta = json.loads((gan / "gan.json").read_text())
    assert meta["metrics"]["images_shown"] == 3 * 4 * 2  # both processes' images count
    assert len(list((gan / "samples").glob("grid_*.png"))) >= 1


def test_era_score_calibration_is_measured_on_clips_the_fit_never_saw():
    from train.encoder_stage import crossfit_nll, fit_temperature, score_nll

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 400)
    noise = rng.random((400, 5)) * 3  # distances that carry no era information
    in_sample = score_nll(noise, labels, fit_temperature(noise, labels))
    assert crossfit_nll(noise, labels) >= in_sample  # the in-sample fit flatters itself
    assert abs(crossfit_nll(noise, labels) - np.log(5)) < 0.05
    informative = noise.copy()
    informative[np.arange(400), labels] -= 1.5
    assert crossfit_nll(informative, labels) < np.log(5) - 0.3


def test_paper_sampling_resolves_to_the_reports_recipe_and_batched_to_ours():
    paper = EncoderStageConfig(sampling="paper").resolved()
    assert (paper.lr, paper.epochs, paper.augment, paper.era_ce, paper.cosine_lr) == (5e-5, 15, False, 0.0, False)
    ours = EncoderStageConfig().resolved()
    assert ours.sampling == "semi-hard" and (ours.lr, ours.epochs, ours.era_ce) == (1e-3, 30, 1.0)
    assert ours.freq_mask > 0 and ours.time_mask > 0 and ours.cosine_lr
    assert EncoderStageConfig(lr=3e-4, epochs=2).resolved().lr == 3e-4  # a given value wins
    with pytest.raises(ConfigError, match="era_ce"):
        EncoderStageConfig(sampling="paper", era_ce=1.0).validate()
