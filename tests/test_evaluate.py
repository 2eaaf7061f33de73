"""Evaluation: KID, diversity ratio, encoder metrics, the era judge (dedup, cache) and `evaluate` end to end.

The corpus here is a tiny Musart-layout folder made by the test: paintings whose colour and stripe pattern
depend on the era (so a judge can learn them), with repeated paintings as the corpus builder makes them,
and a few short tone clips.
"""

import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from mvnet import ERAS
from mvnet.models import CPU
from mvnet.pipeline import untrained
from train import evaluate as ev
from train.judge import (
    EraJudge,
    JudgeConfig,
    JudgeError,
    augment,
    judge_outputs,
    load_judge,
    load_or_train_judge,
    load_paintings,
)

SR = 22050
ERA_COLOURS = np.array([[200, 60, 40], [40, 40, 60], [220, 210, 190], [60, 140, 70], [70, 120, 230]])
FAST_JUDGE = JudgeConfig(widths=(8, 16, 32), epochs=12, batch_size=32, lr=3e-3)


def painting(era: int, rng: np.random.Generator) -> Image.Image:
    """64x64 image: the era's colour, stripes whose period depends on the era, noise."""
    y, x = np.mgrid[0:64, 0:64]
    period = 4 + 3 * era
    stripes = (np.sin(2 * np.pi * (x + rng.uniform(0, period)) / period) > 0)[..., None]
    pixels = ERA_COLOURS[era] * (0.75 + 0.25 * stripes) + rng.normal(0, 12, (64, 64, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_corpus(root, paintings_per_era=(16, 6), clips_per_era=(2, 2), seed=0):
    """Musart layout; each clip a_j gets images i{3j..3j+2}, reusing paintings as the corpus builder does."""
    rng = np.random.default_rng(seed)
    for split, n_paint, n_clips in (("training", paintings_per_era[0], clips_per_era[0]),
                                    ("testing", paintings_per_era[1], clips_per_era[1])):
        for k, era in enumerate(ERAS):
            folder = root / split / era
            folder.mkdir(parents=True)
            pool = [painting(k, rng) for _ in range(n_paint)]
            for i in range(max(n_paint, 3 * n_clips)):
                pool[i % n_paint].save(folder / f"i{i}.png")
            for j in range(n_clips):
                t = np.arange(int(2.5 * SR)) / SR
                wave = 0.3 * np.sin(2 * np.pi * (110 * (k + 1) + 17 * j) * t)
                sf.write(folder / f"a{j}.wav", wave.astype(np.float32), SR)
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    # training: 16 distinct paintings per era stored as 18 files (2 repeats); testing: 6 distinct.
    return write_corpus(tmp_path_factory.mktemp("corpus"), paintings_per_era=(16, 6), clips_per_era=(6, 2))


@pytest.fixture(scope="module")
def judged(corpus, tmp_path_factory):
    judge_dir = tmp_path_factory.mktemp("judge")
    return judge_dir, load_or_train_judge(corpus, judge_dir, FAST_JUDGE, device="cpu")


# ------------------------------------------------------------------------------------------ metrics


def naive_mmd2(x, y):
    k = lambda a, b: (a @ b / len(a) + 1) ** 3  # noqa: E731
    m = len(x)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_matches_the_unbiased_estimator_written_out():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 4)), rng.normal(0.5, 1.0, size=(7, 4))
    result = ev.kid(x, y, n_subsets=3, subset_size=100)  # subset = all rows: every subset is the full set
    assert result["subset_size"] == 7
    assert result["mean"] == pytest.approx(naive_mmd2(x, y), rel=1e-9)
    assert result["std"] == pytest.approx(0.0, abs=1e-12)


def test_kid_is_near_zero_for_the_same_distribution_and_grows_with_a_shift():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(400, 16)), rng.normal(size=(400, 16))
    same = ev.kid(a, b, n_subsets=20, subset_size=200)
    shifted = ev.kid(a, b + 0.5, n_subsets=20, subset_size=200)
    further = ev.kid(a, b + 1.0, n_subsets=20, subset_size=200)
    assert abs(same["mean"]) < 3 * same["std"] + 1e-3
    assert shifted["mean"] > 10 * max(abs(same["mean"]), same["std"])
    assert further["mean"] > shifted["mean"]
    assert ev.kid(a[:1], b) is None


def test_mean_pairwise_distance_and_diversity_ratio():
    assert ev.mean_pairwise_distance(np.array([[0.0], [3.0]])) == pytest.approx(3.0)
    assert ev.mean_pairwise_distance(np.array([[0.0, 0], [3, 0], [0, 4]])) == pytest.approx((3 + 4 + 5) / 3)
    assert ev.mean_pairwise_distance(np.zeros((1, 3))) is None
    rng = np.random.default_rng(2)
    real, other_real = rng.normal(size=(300, 8)), rng.normal(size=(300, 8))
    collapsed = np.repeat(rng.normal(size=(1, 8)), 50, axis=0) + 1e-6 * rng.normal(size=(50, 8))
    assert ev.diversity_ratio(collapsed, real) < 0.01
    assert ev.diversity_ratio(other_real, real) == pytest.approx(1.0, abs=0.05)
    clips = np.repeat(np.arange(10), 5)
    assert ev.same_clip_distance(collapsed, clips) < 1e-4


def test_encoder_metrics_separate_good_from_shuffled_embeddings():
    rng = np.random.default_rng(3)
    centroids = 10 * np.eye(5, 10)
    labels = np.repeat(np.arange(5), 20)
    embeddings = centroids[labels] + rng.normal(0, 0.5, size=(100, 10))
    good = ev.encoder_metrics(embeddings, labels, centroids)
    assert good["accuracy"] == 1.0 and good["balanced_accuracy"] == 1.0
    assert good["silhouette"] > 0.8
    shuffled = ev.encoder_metrics(embeddings, rng.permutation(labels), centroids)
    assert shuffled["accuracy"] < 0.5 and shuffled["silhouette"] < 0.1
    assert set(good["per_era"]) == set(ERAS)


# ------------------------------------------------------------------------------------------ judge


def test_paintings_are_deduplicated_by_content(corpus, judged):
    training = load_paintings(corpus, "training")
    assert training.files == 5 * 18 and len(training) == 5 * 16 and training.duplicates == 10
    assert training.counts() == [16] * 5 and training.images.shape == (80, 3, 64, 64)
    _, bundle = judged
    assert bundle.info["testing"]["also_in_training"] == 0


def test_held_out_copies_of_training_paintings_are_dropped(tmp_path):
    root = write_corpus(tmp_path, paintings_per_era=(4, 3), clips_per_era=(1, 1))
    leaked = root / "training" / "baroque" / "i0.png"
    before = load_paintings(root, "testing")
    (root / "testing" / "baroque" / "i2.png").write_bytes(leaked.read_bytes())  # i2 was a distinct painting
    testing = load_paintings(root, "testing")
    assert len(testing) == len(before)
    kept, dropped = testing.without(set(load_paintings(root, "training").hashes))
    assert dropped == 1 and len(kept) == len(testing) - 1
    assert kept.counts()[ERAS.index("baroque")] == 2


def test_missing_era_is_a_clear_error(tmp_path):
    root = write_corpus(tmp_path, paintings_per_era=(3, 3), clips_per_era=(1, 1))
    for f in (root / "testing" / "modern").glob("i*"):
        f.unlink()
    with pytest.raises(JudgeError, match="No readable paintings.*testing split for modern"):
        load_paintings(root, "testing")


def test_augment_keeps_shape_and_range_and_changes_images():
    images = torch.rand(4, 3, 64, 64)
    out = augment(images, torch.Generator().manual_seed(0), min_crop=0.75)
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1
    assert not torch.allclose(out, images)


def test_judge_learns_easy_eras_and_is_cached(corpus, judged):
    judge_dir, bundle = judged
    held_out = bundle.info["held_out"]
    assert held_out["balanced_accuracy"] >= 0.8, held_out  # chance is 0.2
    assert bundle.info["testing"]["paintings"] == 30 and not bundle.cached
    again = load_or_train_judge(corpus, judge_dir, FAST_JUDGE, device="cpu")
    assert again.cached and again.folder == bundle.folder
    x = torch.as_tensor(bundle.testing.images[:5])
    np.testing.assert_allclose(judge_outputs(again.judge, x)[1], judge_outputs(bundle.judge, x)[1], atol=1e-6)
    other = load_or_train_judge(corpus, judge_dir, JudgeConfig(widths=(8, 16, 32), epochs=1), device="cpu")
    assert other.folder != bundle.folder  # the config is part of the key


def test_broken_cached_judge_is_a_clear_error(judged, tmp_path):
    _, bundle = judged
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "judge.json").write_text((bundle.folder / "judge.json").read_text())
    (broken / "judge.safetensors").write_bytes(b"junk")
    with pytest.raises(JudgeError, match="delete the folder"):
        load_judge(broken)


def test_judge_features_are_penultimate_layer():
    judge = EraJudge((4, 8), n_eras=5).eval()
    logits, features = judge_outputs(judge, torch.rand(3, 3, 64, 64))
    assert features.shape == (3, 8) and logits.shape == (3, 5)
    np.testing.assert_allclose(judge.head(torch.as_tensor(features).float()).detach().numpy(), logits, atol=1e-5)


# ------------------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return untrained(CPU, seed=0, device="cpu").save_pretrained(tmp_path_factory.mktemp("weights"))


def test_evaluate_and_comparison_table(corpus, judged, weights):
    from mvnet.pipeline import MVNet

    judge_dir, bundle = judged
    pipeline = MVNet.from_pretrained(weights, device="cpu")
    results = ev.evaluate(pipeline, corpus, judge_dir, images_per_clip=3, kid_subsets=5,
                          judge_config=FAST_JUDGE)
    assert results["judge"]["key"] == bundle.folder.name and results["judge"]["cached"]
    assert results["clips"]["total"] == 10 and results["generated"]["count"]["baroque"] == 6
    assert 0 <= results["generated"]["accuracy"] <= 1
    assert results["kid"]["overall"]["subset_size"] == 30
    assert set(results["diversity"]["per_era"]) == set(ERAS)
    assert abs(sum(results["generated"]["predicted_share"].values()) - 1) < 1e-3
    assert results["generated"]["from_centroids"]["count"]["modern"] == 48  # 4 x 4 x images_per_clip
    assert 0 <= results["generated"]["from_centroids"]["accuracy"] <= 1
    # An untrained generator ignores the condition: its images look alike across eras and clips.
    assert results["diversity"]["mean"] < 1.0
    json.dumps(results)  # JSON-able

    table = ev.render_comparison({"report recipe": results, "ours": results})
    assert "| metric | report recipe | ours |" in table
    assert table.count("Era accuracy of generated images") == 1
    for era in ERAS:
        assert f"| {era} |" in table
    assert "different judges" not in table


@pytest.mark.slow
def test_main_writes_json_and_markdown_and_reuses_the_judge(corpus, weights, tmp_path, capsys):
    judge_dir = tmp_path / "judge"
    args = ["--weights", str(weights), "--data", str(corpus), "--judge-dir", str(judge_dir),
            "--images-per-clip", "2", "--kid-subsets", "3", "--judge-epochs", "2", "--max-clips-per-era", "1"]
    assert ev.main(args + ["--out", str(tmp_path / "a.json")]) == 0
    assert ev.main(args + ["--out", str(tmp_path / "b.json"), "--seed", "5"]) == 0
    a, b = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert not a["judge"]["cached"] and b["judge"]["cached"] and a["judge"]["key"] == b["judge"]["key"]
    assert a["clips"]["total"] == 5 and a["weights"] == str(weights)
    assert "| Diversity ratio" in (tmp_path / "a.md").read_text()
    assert len(list(judge_dir.iterdir())) == 1

    out = tmp_path / "side.md"
    assert ev.main(["--compare", f"paper={tmp_path / 'a.json'}", f"ours={tmp_path / 'b.json'}",
                    "--markdown", str(out)]) == 0
    assert "| metric | paper | ours |" in out.read_text()


def test_main_reports_bad_input_plainly(corpus, weights, tmp_path, capsys):
    assert ev.main(["--weights", str(tmp_path / "none"), "--data", str(corpus)]) == 2
    assert "No trained weights" in capsys.readouterr().err
    no_test_split = write_corpus(tmp_path / "c", paintings_per_era=(3, 3), clips_per_era=(1, 1))
    shutil.rmtree(no_test_split / "testing")
    assert ev.main(["--weights", str(weights), "--data", str(no_test_split)]) == 2
    assert "Evaluation needs held-out clips" in capsys.readouterr().err
    assert ev.main(["--weights", str(weights), "--data", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert ev.main(["--weights", str(tmp_path)]) == 2
    assert "--data is required" in capsys.readouterr().err
    assert ev.main(["--data", str(corpus)]) == 2
    assert "Say what to evaluate" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ev.main(["--help"])
    assert "held-out" in capsys.readouterr().out
