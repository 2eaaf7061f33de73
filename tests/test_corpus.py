"""Starter-corpus builder: work keys, split, allocation, MIDI windows, and a tiny end-to-end build."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import mido
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from mvnet import ERAS
from mvnet.audio import CLIP_SAMPLES, SAMPLE_RATE
from train import corpus
from train.corpus import (
    PROGRAM_POOL,
    BuildSettings,
    CorpusError,
    Piece,
    Segment,
    allocate_clips,
    build_corpus,
    choose_programs,
    load_score,
    render_midi,
    split_by_work,
    work_key,
    write_render_midi,
)
from train.datasets import read_musart

# --------------------------------------------------------------------------------------- pure helpers


@pytest.mark.parametrize("a, b", [
    (("mozart", "dcml", "k331-1"), ("mozart", "pianomidide", "mz-331-3")),
    (("mozart", "asap", "piano-sonatas-11-3-stahievitch02"), ("mozart", "dcml", "k331-2")),
    (("beethoven", "pianomidide", "pathetique-1"), ("beethoven", "asap", "piano-sonatas-8-1-chens01")),
    (("chopin", "pianomidide", "chpn-op10-e01"), ("chopin", "asap", "etudes-op-10-10-na-2009-02")),
    (("chopin", "asap", "sonata-2-2nd-kaszos14"), ("chopin", "asap", "sonata-2-2nd-no-repeat-giltburg02")),
    (("debussy", "pianomidide", "deb-clai"), ("debussy", "dcml", "l075-03-suite-clair")),
    (("schubert", "pianomidide", "schuim-1"), ("schubert", "asap", "impromptu-op-90-d-899-4-dossin04")),
    (("bach", "asap", "prelude-bwv-846-shi05m"), ("bach", "asap", "fugue-bwv-846-shi05m")),
    (("palestrina", "music21", "kyrie-47"), ("palestrina", "music21", "sanctus-47-a")),
])
def test_work_key_joins_versions_of_one_work(a, b):
    assert work_key(*a) == work_key(*b)


@pytest.mark.parametrize("a, b", [
    (("mozart", "dcml", "k331-1"), ("mozart", "dcml", "k332-1")),
    (("chopin", "pianomidide", "chpn-op10-e01"), ("chopin", "pianomidide", "chpn-op25-e1")),
    (("monteverdi", "music21", "madrigal-3-1"), ("monteverdi", "music21", "madrigal-3-2")),
    (("bach", "music21", "bwv1-6"), ("handel", "music21", "bwv1-6")),
])
def test_work_key_keeps_different_works_apart(a, b):
    assert work_key(*a) != work_key(*b)


def _piece(era, composer, source, pid):
    return Piece("", f"{era}/{source}__{composer}__{pid}.mid", era, composer, source, pid, 60.0,
                 work_key(composer, source, pid))


def test_split_moves_whole_works_and_is_seeded():
    pieces = [_piece("classical", "mozart", src, f"{pre}{k}-{m}") for k in range(300, 340)
              for src, pre in (("dcml", "k"), ("pianomidide", "mz-")) for m in (1, 2)]
    split = split_by_work(pieces, 0.2, seed=3)
    assert split == split_by_work(pieces, 0.2, seed=3)
    sides = {}
    for p in pieces:
        sides.setdefault(p.work, set()).add(split[p.rel])
    assert all(len(s) == 1 for s in sides.values())
    n_test = sum(v == "testing" for v in split.values())
    assert 0.15 * len(pieces) <= n_test <= 0.25 * len(pieces)
    assert split != split_by_work(pieces, 0.2, seed=4)


def test_allocate_clips_hits_target_within_capacity():
    rng = np.random.default_rng(0)
    counts = allocate_clips([1, 5, 10, 2, 30], 20, rng)
    assert sum(counts) == 20 and all(c <= cap for c, cap in zip(counts, [1, 5, 10, 2, 30], strict=True))
    assert max(counts) - min(c for c, cap in zip(counts, [1, 5, 10, 2, 30], strict=True) if cap > 2) <= 1
    assert sum(allocate_clips([1, 2], 50, rng)) == 3  # short era: everything there is


def test_programs_come_from_the_shared_pool():
    rng = np.random.default_rng(1)
    drawn = [choose_programs(n, rng) for n in (1, 2, 4, 4, 6) * 40]
    used = {p for programs, _ in drawn for p in programs}
    assert used <= set(PROGRAM_POOL) and len(used) > len(PROGRAM_POOL) // 2
    assert all(1 <= len(set(p)) <= 3 for p, _ in drawn)
    for (programs, by_register), n in zip(drawn, (1, 2, 4, 4, 6) * 40, strict=True):
        assert len(programs) == (len(set(programs)) if by_register else n)


@pytest.mark.parametrize("seed", range(20))
def test_number_of_instruments_does_not_depend_on_the_score(seed):
    """A one-track piano score and a 5-voice choir get the same instrument count from the same seed."""
    counts = {len(set(choose_programs(n, np.random.default_rng(seed))[0])) for n in (1, 2, 5)}
    assert len(counts) == 1


def test_missing_fluidsynth_or_soundfont_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(corpus.shutil, "which", lambda name: None)
    with pytest.raises(CorpusError, match="apt-get install fluidsynth"):
        corpus.find_fluidsynth()
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="apt-get install fluidsynth fluid-soundfont-gm"):
        corpus.find_soundfonts([tmp_path / "empty"])


# ----------------------------------------------------------------------------------- needs fluidsynth


def _small_soundfont() -> str:
    if shutil.which("fluidsynth") is None:
        pytest.skip("fluidsynth is not installed (apt-get install fluidsynth timgm6mb-soundfont)")
    try:
        fonts = corpus.find_soundfonts()
    except CorpusError as exc:
        pytest.skip(f"no General-MIDI soundfont on this machine: {exc}")
    return str(min(fonts, key=lambda p: p.stat().st_size))


def _write_midi(path: Path, seconds: float, program: int, voices: int, seed: int) -> None:
    """A little polyphonic piece: `voices` tracks on one channel (as music21 exports), 1 beat = 0.5 s."""
    rng = np.random.default_rng(seed)
    mid = mido.MidiFile(type=1, ticks_per_beat=480)
    conductor = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=500_000)])
    mid.tracks.append(conductor)
    for v in range(voices):
        track = mido.MidiTrack([mido.Message("program_change", channel=0, program=program)])
        base = 48 + 7 * v
        for _ in range(int(seconds * 2)):
            note = int(base + rng.integers(0, 12))
            track.append(mido.Message("note_on", channel=0, note=note, velocity=80, time=0))
            track.append(mido.Message("note_off", channel=0, note=note, velocity=0, time=480))
        mid.tracks.append(track)
    mid.save(path)


ERA_MIDI = {  # era -> (composer, source, piece_id, original program, voices)
    "renaissance": [("palestrina", "music21", f"kyrie-{n}", 52, 4) for n in (1, 2, 3)],
    "baroque": [("bach", "music21", f"bwv{n}-6", 19, 3) for n in (10, 20, 30)],
    "classical": [("mozart", "dcml", "k331-1", 0, 2), ("mozart", "pianomidide", "mz-331-1", 0, 2),
                  ("mozart", "dcml", "k545-1", 0, 2), ("haydn", "pianomidide", "haydn-7-1", 0, 2)],
    "romantic": [("chopin", "pianomidide", f"chpn-op{n}", 0, 2) for n in (18, 23, 31)],
    "modern": [("satie", "mutopia", f"gymnopedie-{n}", 0, 2) for n in (1, 2, 3)],
}


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    font = _small_soundfont()
    base = tmp_path_factory.mktemp("corpus")
    midi, paintings, out = base / "midi", base / "paintings", base / "out"
    rows = []
    for e, era in enumerate(ERAS):
        (midi / era).mkdir(parents=True)
        (paintings / era).mkdir(parents=True)
        for j, (composer, source, pid, program, voices) in enumerate(ERA_MIDI[era]):
            name = f"{era}/{source}__{composer}__{pid}.mid"
            _write_midi(midi / name, 21.0, program, voices, seed=10 * e + j)
            rows.append({"path": name, "era": era, "composer": composer, "source": source,
                         "piece_id": pid, "duration_seconds": 21.0})
        for n in range(5):  # tiny odd-sized paintings; 5 per era is fewer than 3K: they get reused
            color = (40 * e, 20 * n, 200 - 30 * e)
            Image.new("RGB", (30 + n, 20), color).save(paintings / era / f"src__tag__p{n}.jpg")
    with open(midi / "index.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    settings = BuildSettings(midi=str(midi), paintings=str(paintings), out=str(out), soundfonts=[font],
                             seed=0, test_fraction=0.34, train_clips_per_era=3, jobs=2, progress=False)
    manifest = build_corpus(settings)
    return settings, manifest, out


@pytest.mark.slow
def test_layout_audio_and_images(tiny_corpus):
    _, manifest, out = tiny_corpus
    for era in ERAS:
        for side in ("training", "testing"):
            folder = out / side / era
            K = manifest["counts"][era][side]["clips"]
            assert sorted(p.name for p in folder.glob("a*")) == sorted(f"a{k}.ogg" for k in range(K))
            assert sorted(p.name for p in folder.glob("i*")) == sorted(f"i{n}.jpg" for n in range(3 * K))
            for k in range(K):
                info = sf.info(str(folder / f"a{k}.ogg"))
                assert (info.samplerate, info.channels, info.frames) == (SAMPLE_RATE, 1, CLIP_SAMPLES)
            if K:
                with Image.open(folder / "i0.jpg") as img:
                    assert img.size == (64, 64) and img.mode == "RGB"
        assert manifest["counts"][era]["training"]["clips"] == 3
    wave, _ = sf.read(str(out / "training" / "baroque" / "a0.ogg"), dtype="float32")
    assert 0.05 < float(np.sqrt(np.mean(wave ** 2))) < 0.2  # normalized to about -20 dBFS


@pytest.mark.slow
def test_split_is_by_work_and_paintings_do_not_leak(tiny_corpus):
    _, manifest, _ = tiny_corpus
    clips = manifest["clips"]
    train_pieces = {c["piece"] for c in clips if c["split"] == "training"}
    test_pieces = {c["piece"] for c in clips if c["split"] == "testing"}
    assert train_pieces and test_pieces and not train_pieces & test_pieces
    assert not {c["work"] for c in clips if c["split"] == "training"} & {c["work"] for c in clips if c["split"] == "testing"}
    k331 = {c["split"] for c in clips if c["work"] == "mozart:k331"}
    assert len(k331) == 1  # DCML and piano-midi.de versions on one side
    for era in ERAS:
        seen = {side: {p for c in clips if c["era"] == era and c["split"] == side for p in c["paintings"]}
                for side in ("training", "testing")}
        assert not seen["training"] & seen["testing"]
        assert manifest["counts"][era]["training"]["paintings_reused"]  # 3 training paintings for 9 slots
    assert any("reused" in note for note in manifest["notes"])
    assert {p for c in clips for p in c["programs"]} <= set(PROGRAM_POOL)
    assert len({p for c in clips for p in c["programs"]}) >= 4  # not the scores' own choir/organ/piano
    assert all(isinstance(c["by_register"], bool) and c["soundfont"].endswith((".sf2", ".sf3")) for c in clips)


@pytest.mark.slow
def test_reader_reads_the_built_corpus_with_the_pairing_rule(tiny_corpus):
    _, manifest, out = tiny_corpus
    lines = []
    corpus_read = read_musart(out, log=lines.append)
    assert "label counts" in lines[0]
    for side in ("training", "testing"):
        expected = {era: manifest["counts"][era][side]["clips"] for era in ERAS}
        assert corpus_read.report.label_counts(side) == expected
    train = corpus_read.split("training")
    assert train.labels.tolist() == [ERAS.index(item.era) for item in train.items]
    for row, item in enumerate(train.items):
        K = manifest["counts"][item.era]["training"]["clips"]
        partners = [train.image_paths[i].name for r, i in train.pairs if r == row]
        assert partners == [f"i{item.index}.jpg", f"i{item.index + K}.jpg", f"i{item.index + 2 * K}.jpg"]
    assert len(train.pairs) == 3 * len(train.items)


@pytest.mark.slow
def test_rebuild_resumes_without_rendering_again(tiny_corpus):
    settings, manifest, out = tiny_corpus
    staged = sorted((out / "_build" / "clips").rglob("*.ogg"))
    before = {p: p.stat().st_mtime_ns for p in staged}
    (out / "training" / "modern" / "a0.ogg").unlink()  # a damaged layout is repaired from the staging
    again = build_corpus(settings)
    assert {p: p.stat().st_mtime_ns for p in staged} == before
    assert again["counts"] == manifest["counts"]
    assert [c["file"] for c in again["clips"]] == [c["file"] for c in manifest["clips"]]
    assert (out / "training" / "modern" / "a0.ogg").is_file()
    assert json.loads((out / "manifest.json").read_text())["counts"] == manifest["counts"]


@pytest.mark.slow
def test_clip_window_keeps_timing_and_held_notes(tmp_path):
    font = _small_soundfont()
    mid = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=1_000_000)])  # 1 beat = 1 s
    track += [mido.Message("note_on", note=60, velocity=100, time=5 * 480),  # 5-6 s
              mido.Message("note_off", note=60, time=480),
              mido.Message("note_on", note=64, velocity=100, time=4 * 480),  # 10-20 s
              mido.Message("note_off", note=64, time=10 * 480)]
    mid.tracks.append(track)
    mid.save(tmp_path / "x.mid")
    score = load_score(str(tmp_path / "x.mid"))
    assert score.duration == pytest.approx(20.0)
    assert score.activity(4.0, 13.0) == pytest.approx(4.0 / 9.0)
    segments = [Segment(score, 4.0, [0]), Segment(score, 15.0, [0])]  # one voice, one program
    write_render_midi(segments, str(tmp_path / "r.mid"))
    wave = render_midi(str(tmp_path / "r.mid"), font, str(tmp_path / "r.wav"))

    def loudness(seg, at):  # dB of 50 ms around `at` seconds into the clip
        start = int(round((seg.base + seg.pre_roll + at) * SAMPLE_RATE))
        return 20 * np.log10(np.sqrt(np.mean(wave[start:start + 1102] ** 2)) + 1e-9)

    first, second = segments
    assert loudness(first, 0.5) < -90 < loudness(first, 1.1)  # the note at 5 s starts 1 s into the clip
    assert loudness(second, 0.2) > -90  # the note held since 10 s sounds from the clip's start


@pytest.mark.slow
def test_register_bands_give_a_one_voice_score_several_channels(tmp_path):
    _small_soundfont()
    _write_midi(tmp_path / "x.mid", 12.0, program=0, voices=1, seed=0)
    score = load_score(str(tmp_path / "x.mid"))
    assert score.n_voices == 1
    write_render_midi([Segment(score, 1.0, [0, 40, 73], by_register=True)], str(tmp_path / "r.mid"))
    notes = [m for m in mido.MidiFile(tmp_path / "r.mid") if m.type == "note_on"]
    by_channel = {}
    for m in notes:
        by_channel.setdefault(m.channel, []).append(m.note)
    assert len(by_channel) == 3  # low, middle and high notes on three instruments
    lows, mids, highs = (by_channel[c] for c in sorted(by_channel))
    assert max(lows) <= min(mids) and max(mids) <= min(highs)
    programs = {m.channel: m.program for m in mido.MidiFile(tmp_path / "r.mid") if m.type == "program_change"}
    assert sorted(programs.values()) == [0, 40, 73]


@pytest.mark.slow
def test_cli_inspect_and_cache(tiny_corpus, capsys):
    _, manifest, out = tiny_corpus
    assert corpus.main(["inspect", str(out)]) == 0
    assert capsys.readouterr().out.count("label counts") == 2  # once per split, report printed once
    assert corpus.main(["inspect", str(out / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert corpus.main(["cache", str(out), "--cache-dir", str(out / "_features")]) == 0
    first = capsys.readouterr().out
    n_clips = len(manifest["clips"])
    assert f"{n_clips} clips, computed {n_clips}, reused 0" in first
    assert corpus.main(["cache", str(out), "--cache-dir", str(out / "_features")]) == 0
    assert f"{n_clips} clips, computed 0, reused {n_clips}" in capsys.readouterr().out
