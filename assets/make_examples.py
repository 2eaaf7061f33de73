"""Synthesize the app's bundled example clips with the starter-corpus builder (fluidsynth).

    python assets/make_examples.py --midi ../shared/data/midi

One 8.91 s clip per era, plus one longer clip (three windows) that shows how a long recording is
embedded. Clips come from works on the *testing* side of the corpus builder's default split, so the
examples are music the bundled model never trained on. Timbre, soundfont choice, pre-roll and level
follow the corpus builder exactly (train/corpus.py), so the examples sound like the training data.
Writes assets/examples/<name>.ogg (Ogg Vorbis, 22,050 Hz mono) and assets/examples/examples.json
(piece, composer, source and licence of each clip).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

from mvnet import ERAS
from mvnet.audio import CLIP_SAMPLES, CLIP_SECONDS, SAMPLE_RATE
from train import corpus

OUT = Path(__file__).resolve().parent / "examples"
SEED = 0
SOUNDFONT = "FluidR3_GM.sf2"  # the fuller of Debian's GM fonts; falls back to any found

# Composers people recognise, and sources whose licences allow redistribution (in this order).
PREFERRED = {
    "renaissance": ("palestrina", "monteverdi"),
    "baroque": ("bach",),
    "classical": ("mozart", "haydn", "beethoven"),
    "romantic": ("chopin", "schumann", "schubert"),
    "modern": ("satie", "debussy", "joplin"),
}
SOURCE_ORDER = ("mutopia", "music21", "pianomidide")
LICENCES = {
    "music21": "music21 corpus encoding (distributed with the music21 toolkit; some non-commercial)",
    "mutopia": "Mutopia Project (public domain or CC BY / CC BY-SA per piece)",
    "pianomidide": "piano-midi.de by Bernd Krueger, CC BY-SA",
    "asap": "ASAP dataset, CC BY-NC-SA 4.0",
    "dcml": "DCML corpora, CC BY-NC-SA 4.0",
}
LONG_EXAMPLE = ("classical", 3)  # era, windows


def pick_piece(pieces, split, era: str, skip: set[str], min_seconds: float) -> corpus.Piece:
    """A testing-side piece of a preferred composer and source, long enough, of a work not in `skip`."""
    candidates = [p for p in pieces if p.era == era and split[p.rel] == "testing" and p.work not in skip
                  and p.source in SOURCE_ORDER and p.duration_seconds >= min_seconds]
    for composer in PREFERRED[era]:
        for source in SOURCE_ORDER:
            chosen = sorted((p for p in candidates if p.composer == composer and p.source == source),
                            key=lambda p: p.rel)
            if chosen:
                return chosen[0]
    if not candidates:
        raise corpus.CorpusError(f"no testing-side {era} piece of at least {min_seconds:.0f} s")
    return sorted(candidates, key=lambda p: p.rel)[0]


def render_example(piece: corpus.Piece, windows: int, font: str, fluidsynth: str) -> tuple[np.ndarray, dict]:
    """`windows` consecutive clip windows of one piece, rendered and joined: float32 (windows * CLIP_SAMPLES,)."""
    score = corpus.load_score(piece.path)
    rng = corpus._rng(SEED, "example", piece.rel)
    whole = corpus.Score(score.events, score.n_voices, score.duration - (windows - 1) * CLIP_SECONDS,
                         score.sounding)  # so the chosen offset leaves room for all windows
    offsets, _ = corpus.choose_offsets(whole, 1, rng)
    if not offsets:
        raise corpus.CorpusError(f"{piece.rel}: no window where notes sound")
    programs = corpus.choose_programs(score.n_voices, rng)
    segments = [corpus.Segment(score, offsets[0] + k * CLIP_SECONDS, programs) for k in range(windows)]
    with tempfile.TemporaryDirectory(prefix="mvnet-example-") as tmp:
        midi_path, wav_path = os.path.join(tmp, "example.mid"), os.path.join(tmp, "example.wav")
        corpus.write_render_midi(segments, midi_path)
        wave = corpus.render_midi(midi_path, font, wav_path, fluidsynth)
    parts = []
    for seg in segments:
        start = int(round((seg.base + seg.pre_roll) * SAMPLE_RATE))
        parts.append(np.pad(wave[start:start + CLIP_SAMPLES], (0, max(0, start + CLIP_SAMPLES - len(wave)))))
    clip = corpus.normalize_level(np.concatenate(parts))
    info = {"piece": piece.rel, "composer": piece.composer, "source": piece.source,
            "licence": LICENCES.get(piece.source, piece.source), "offset_seconds": offsets[0],
            "seconds": round(len(clip) / SAMPLE_RATE, 2), "soundfont": Path(font).name,
            "instruments": [corpus.PROGRAM_POOL[p] for p in sorted(set(programs))]}
    return clip, info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--midi", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "midi"))
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    fluidsynth = corpus.find_fluidsynth()
    fonts = corpus.find_soundfonts()
    font = str(next((f for f in fonts if f.name == SOUNDFONT), fonts[0]))
    pieces = corpus.read_midi_index(args.midi)
    split = corpus.split_by_work(pieces, corpus.DEFAULT_TEST_FRACTION, SEED)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plan = [(era, 1, era) for era in ERAS] + [(LONG_EXAMPLE[0], LONG_EXAMPLE[1], f"{LONG_EXAMPLE[0]}_long")]
    used: set[str] = set()
    credits = {}
    for era, windows, name in plan:
        piece = pick_piece(pieces, split, era, used, min_seconds=windows * CLIP_SECONDS + 2.0)
        used.add(piece.work)
        clip, info = render_example(piece, windows, font, fluidsynth)
        corpus.write_audio_atomic(out / f"{name}.ogg", clip, "ogg")
        credits[f"{name}.ogg"] = {"era": era, **info}
        print(f"{name}.ogg  {info['seconds']:5.1f} s  {(out / f'{name}.ogg').stat().st_size / 1e3:5.0f} kB  "
              f"{piece.rel}  ({', '.join(info['instruments'])})")
    corpus.write_json_atomic(out / "examples.json", credits)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
