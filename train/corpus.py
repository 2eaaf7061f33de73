"""Starter corpus: MIDI scores + paintings by era -> a corpus in the Musart-Dataset layout.

    python -m train.corpus build --midi ../shared/data/midi --paintings ../shared/data/paintings \\
        --out data/starter
    python -m train.corpus inspect data/starter      # what the Musart reader sees (label counts, problems)
    python -m train.corpus cache data/starter        # warm the log-mel feature cache

Output: `<out>/{training,testing}/<era>/a{k}.ogg` (Ogg Vorbis, 22,050 Hz mono, exactly CLIP_SAMPLES
= 8.91 s) and `i{n}.jpg` (64x64 RGB); audio a{k} pairs with images i{k}, i{k+K}, i{k+2K}. Also
`<out>/manifest.json` (every clip's piece, work, offset, soundfont and programs; counts per era; the
split) and `<out>/_build/` (staged clips and resized paintings that make a rerun resumable).

How a clip is made, and why:
- The MIDI index (`index.csv`: path, era, composer, source, piece_id, duration_seconds; or file names
  `<source>__<composer>__<piece>.mid` when there is no index) is grouped into *works* (`work_key`),
  so the same work from two sources (a Mozart sonata from DCML and from piano-midi.de) never lands
  on both sides of the train/test split. Works are split per era, seeded.
- Each clip is a window of the score at a seeded offset where notes sound most of the time. The
  window (with 1 s of pre-roll, held notes re-struck, controller state carried over) is cut out of
  the MIDI, so only the clip is synthesized, not the whole piece.
- Timbre must not give the era away (the scores are choir for Palestrina, piano for Chopin), so every
  clip gets 1-3 instruments drawn from one pool shared by all eras (`PROGRAM_POOL`), spread over the
  score's voices (track x channel), or over pitch bands when the score has fewer voices than
  instruments (so a one-track piano score sounds as varied as a 4-part choir); plus a soundfont
  drawn from those found. Percussion (channel 10)
  is dropped. Level is normalized per clip (RMS -20 dBFS), so loudness does not tell the era either.
- Clips of several pieces are rendered in one fluidsynth call per soundfont (fluidsynth's start-up
  costs more than rendering a clip), on a pool of worker processes.
- Clips per piece are chosen per era to reach `train_clips_per_era` training clips, capped by length.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from bisect import bisect_right
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from mvnet import ERAS
from mvnet.audio import CLIP_SAMPLES, CLIP_SECONDS, SAMPLE_RATE
from mvnet.files import atomic_file, atomic_write_json

INSTALL_HINT = "apt-get install fluidsynth fluid-soundfont-gm timgm6mb-soundfont"
SOUNDFONT_DIRS = ("/usr/share/sounds/sf2", "/usr/share/soundfonts", "/usr/share/sounds/sf3")

# General-MIDI programs (0-based), one pool for every era: keyboards, strings, winds, organ, voice, plucked.
PROGRAM_POOL = {
    0: "acoustic grand piano", 1: "bright acoustic piano", 4: "electric piano 1", 6: "harpsichord",
    11: "vibraphone", 19: "church organ", 21: "accordion", 24: "acoustic guitar (nylon)", 40: "violin",
    41: "viola", 42: "cello", 46: "orchestral harp", 48: "string ensemble 1", 52: "choir aahs",
    60: "french horn", 68: "oboe", 70: "bassoon", 71: "clarinet", 73: "flute",
}
INSTRUMENTS_PER_CLIP = (1, 2, 3)
INSTRUMENTS_PER_CLIP_P = (0.45, 0.35, 0.20)

DEFAULT_TRAIN_CLIPS_PER_ERA = 360
MIN_TRAIN_CLIPS_PER_ERA = 300  # eras below this are reported as falling short
DEFAULT_TEST_FRACTION = 0.15
DEFAULT_IMAGE_SIZE = 64
AUDIO_FORMATS = {"ogg": ("OGG", "VORBIS"), "flac": ("FLAC", "PCM_16")}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")

PRE_ROLL_SECONDS = 1.0  # rendered before each clip so held notes' re-attacks and reverb settle
GAP_SECONDS = 2.0  # silence between clips in one render, for the reverb tail to die away
MIN_ACTIVITY = 0.75  # fraction of a window in which at least one note must sound
FALLBACK_ACTIVITY = 0.4
TARGET_RMS = 0.1  # -20 dBFS
SILENT_RMS = 1e-4
SILENT_FRAME_FRACTION = 0.5  # more than this share of 0.1-s frames 40 dB below the loudest = near-silent
PIECES_PER_TASK = 6
PLAN_VERSION = 2  # bump when clip planning or rendering changes, so a resumed build redoes staged clips
_OUT_TICKS_PER_BEAT = 480
_OUT_TEMPO = 500_000  # us per beat -> 960 ticks per second
_TICKS_PER_SECOND = _OUT_TICKS_PER_BEAT * 1_000_000 / _OUT_TEMPO
_OUT_CHANNELS = tuple(c for c in range(16) if c != 9)  # channel 10 (index 9) is percussion in GM
_CARRIED_CONTROLS_EXCLUDED = {0, 32} | set(range(120, 128))  # bank select, channel-mode messages


class CorpusError(RuntimeError):
    """A corpus cannot be built as asked; the message says what to do."""


# ------------------------------------------------------------------------------------- tools on the machine


def find_fluidsynth() -> str:
    """Path of the fluidsynth binary, or CorpusError saying what to install."""
    path = shutil.which("fluidsynth")
    if path is None:
        raise CorpusError(f"fluidsynth is not installed. Install it with: {INSTALL_HINT}")
    return path


def find_soundfonts(paths: list[str | os.PathLike] | None = None) -> list[Path]:
    """General-MIDI soundfonts to render with: the given files/folders, else the system's folders.

    Symlinks to the same file (Debian's default-GM.sf2) count once. Raises CorpusError when none.
    """
    candidates: list[Path] = []
    for entry in paths or SOUNDFONT_DIRS:
        entry = Path(entry)
        if entry.is_dir():
            candidates += sorted(p for p in entry.iterdir() if p.suffix.lower() in (".sf2", ".sf3"))
        elif entry.is_file():
            candidates.append(entry)
        elif paths:
            raise CorpusError(f"Soundfont {entry} does not exist.")
    seen, found = set(), []
    for path in candidates:
        real = path.resolve()
        if real.is_file() and real not in seen:
            seen.add(real)
            found.append(real)
    if not found:
        where = ", ".join(str(p) for p in (paths or SOUNDFONT_DIRS))
        raise CorpusError(f"No General-MIDI soundfont (.sf2/.sf3) found in {where}. Install one with: {INSTALL_HINT}")
    return found


# --------------------------------------------------------------------------------------- pieces and works


@dataclass
class Piece:
    path: str  # absolute path of the .mid file
    rel: str  # path relative to the MIDI root, e.g. "baroque/asap__bach__fugue-bwv-846-shi05m.mid"
    era: str
    composer: str
    source: str
    piece_id: str
    duration_seconds: float
    work: str = ""


def read_midi_index(midi_root: str | os.PathLike, eras=ERAS) -> list[Piece]:
    """Pieces from `<midi_root>/index.csv`, or from `<midi_root>/<era>/*.mid` when there is no index."""
    root = Path(midi_root)
    if not root.is_dir():
        raise CorpusError(f"MIDI folder {root} does not exist.")
    pieces = []
    index = root / "index.csv"
    if index.is_file():
        with open(index, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                if row["era"] not in eras:
                    continue
                path = root / row["path"]
                if not path.is_file():
                    continue
                pieces.append(Piece(str(path), row["path"], row["era"], row["composer"], row["source"],
                                    row["piece_id"], float(row["duration_seconds"] or 0)))
    else:
        for era in eras:
            for path in sorted((root / era).glob("*.mid*")):
                parts = path.stem.split("__")
                source, composer, piece_id = (parts if len(parts) == 3 else ("unknown", "unknown", path.stem))
                pieces.append(Piece(str(path), f"{era}/{path.name}", era, composer, source, piece_id, 0.0))
    for piece in pieces:
        piece.work = work_key(piece.composer, piece.source, piece.piece_id)
    if not pieces:
        raise CorpusError(f"No MIDI files for the eras {', '.join(eras)} under {root}.")
    return pieces


_ASAP_VARIANT = re.compile(r"-(?:no-(?:first-|2-)?repeat|repeat|no-trio)(?=-|$)")
# Beethoven's piano sonatas by number -> opus, so ASAP's "piano-sonatas-23" meets piano-midi's "appass".
_BEETHOVEN_SONATA_OPUS = {1: 2, 2: 2, 3: 2, 4: 7, 5: 10, 6: 10, 7: 10, 8: 13, 9: 14, 10: 14, 11: 22, 12: 26,
                          13: 27, 14: 27, 15: 28, 16: 31, 17: 31, 18: 31, 19: 49, 20: 49, 21: 53, 22: 54,
                          23: 57, 24: 78, 25: 79, 26: 81, 27: 90, 28: 101, 29: 106, 30: 109, 31: 110, 32: 111}
_BEETHOVEN_NICKNAMES = {"pathetique": "op13", "appass": "op57", "waldstein": "op53", "mond": "op27",
                        "les-adieux": "op81", "hammerklavier": "op106", "elise": "woo59"}
_MOZART_SONATA_K = {8: 310, 11: 331, 12: 332}
_CHOPIN_NAMED = {"ballades-1": "op23", "ballades-2": "op38", "ballades-3": "op47", "ballades-4": "op52",
                 "barcarolle": "op60", "berceuse": "op57", "polonaises-53": "op53", "scherzos-20": "op20",
                 "scherzos-31": "op31", "scherzos-39": "op39", "scherzos-54": "op54", "sonata-2": "op35",
                 "sonata-3": "op58", "chpn-p": "op28", "mazurka06": "op6"}
_SCHUBERT_NAMED = {"schuim": "d899", "schumm": "d780", "moment-musical": "d780", "impromptu-op142": "d935",
                   "schu-143": "d784", "wanderer": "d760", "lindenbaum": "d911"}
_SCHUMANN_NAMED = {"scn15": "op15", "scn16": "op16", "kreisleriana": "op16", "scn68": "op68",
                   "abegg": "op1", "toccata": "op7", "arabeske": "op18", "dichterliebe": "op48"}
_LISZT_NAMED = {"transcendental": "transcendental-etudes", "liz-et-trans": "transcendental-etudes",
                "paganini": "paganini-etudes", "liz-et": "paganini-etudes",
                "hungarian-rhapsodies": "hungarian-rhapsodies", "liz-rhap": "hungarian-rhapsodies"}
_DEBUSSY_NAMED = {"deb-": "l075", "debussy-cc": "l113", "images-book-1": "l110", "pour-le-piano": "l095"}
_DEBUSSY_COLLECTIONS = {"l075", "l095", "l110", "l113"}  # sets that other sources hold too


def _first(named: dict[str, str], text: str) -> str | None:
    return next((value for key, value in named.items() if text.startswith(key) or f"-{key}" in text), None)


def work_key(composer: str, source: str, piece_id: str) -> str:
    """`composer:work` so that versions of one work from different sources share a key.

    Cross-source duplicates in the shared data are matched through catalogue numbers (BWV, K., D.,
    opus, Debussy's L.), sonata numbers and nicknames; movements of a sonata or set that another
    source also holds are grouped together (coarser is the safe side: it can only move whole works).
    Anything else is its own work (performer and repeat variants of ASAP recordings are stripped).
    """
    composer = composer.strip().lower()
    pid = piece_id.strip().lower()
    if source == "asap":
        pid = _ASAP_VARIANT.sub("", pid.rsplit("-", 1)[0] if "-" in pid else pid)
    pid = re.sub(r"-movement\d+.*$", "", pid)
    work = None
    if composer == "bach":
        m = re.search(r"bwv-?(\d+)", pid) or re.match(r"bach-(\d+)$", pid)
        work = f"bwv{m.group(1)}" if m else None
    elif composer == "mozart":
        m = re.match(r"piano-sonatas-(\d+)", pid)
        if m and int(m.group(1)) in _MOZART_SONATA_K:
            work = f"k{_MOZART_SONATA_K[int(m.group(1))]}"
        else:
            m = re.search(r"(?:^|-)(?:k|mz-|fantasie-)(\d+)", pid)
            work = f"k{m.group(1)}" if m else None
    elif composer == "beethoven":
        m = re.match(r"piano-sonatas-(\d+)", pid)
        if m:
            work = f"op{_BEETHOVEN_SONATA_OPUS.get(int(m.group(1)), 'sonata' + m.group(1))}"
        else:
            work = _first(_BEETHOVEN_NICKNAMES, pid)
            m = re.search(r"opus(\d+)(no\d+)?", pid)
            if work is None and m:
                work = f"op{m.group(1)}{m.group(2) or ''}"
    elif composer == "chopin":
        work = _first(_CHOPIN_NAMED, pid)
        m = re.search(r"op-?(\d+)", pid)
        if work is None and m:
            work = f"op{m.group(1)}"
    elif composer == "schubert":
        work = _first(_SCHUBERT_NAMED, pid)
        m = re.search(r"(?:^|-)d-?(\d{3})", pid) or re.match(r"piano-sonatas-(\d+)", pid)
        if work is None and m:
            work = f"d{m.group(1)}"
    elif composer == "schumann":
        work = _first(_SCHUMANN_NAMED, pid)
    elif composer == "liszt":
        work = _first(_LISZT_NAMED, pid)
    elif composer == "debussy":
        m = re.match(r"l(\d{3})", pid)
        work = f"l{m.group(1)}" if m and f"l{m.group(1)}" in _DEBUSSY_COLLECTIONS else _first(_DEBUSSY_NAMED, pid)
    elif composer == "ravel":
        work = next((w for w in ("miroirs", "gaspard", "pavane", "jeux-deau") if w in pid), None)
    elif composer in ("rachmaninoff", "brahms"):
        m = re.search(r"op(?:us)?-?(\d+)", pid)
        work = f"op{m.group(1)}" if m else None
    elif composer == "haydn":
        m = re.match(r"(?:hay|haydn|keyboard-sonatas)-(\d+)", pid)
        work = f"hob16-{m.group(1)}" if m else None
    elif composer == "palestrina":
        m = re.search(r"(\d+)", pid)  # mass number: kyrie-47 and sanctus-47-a belong to one mass
        work = f"mass-{m.group(1)}" if m else None
    elif composer == "monteverdi":
        work = re.sub(r"-old$", "", pid)
    elif composer == "cpebach":
        m = re.match(r"wq(\d+)n(\d+)", pid)
        work = f"wq{m.group(1)}n{m.group(2)}" if m else None
    elif composer in ("jcbach", "pleyel", "wfbach"):
        m = re.match(r"([a-z]+\d+)", pid)
        work = m.group(1) if m else None
    elif composer == "schuetz":
        m = re.search(r"swv(\d+)", pid)
        work = f"swv{m.group(1)}" if m else None
    return f"{composer}:{work or pid}"


def _stable_int(*parts) -> int:
    return int.from_bytes(hashlib.sha1("\x1f".join(map(str, parts)).encode()).digest()[:8], "little")


def _rng(seed: int, *parts) -> np.random.Generator:
    return np.random.default_rng([seed, _stable_int(*parts)])


def split_by_work(pieces: list[Piece], test_fraction: float, seed: int) -> dict[str, str]:
    """piece.rel -> "training" | "testing"; whole works move together, about `test_fraction` of each era's files."""
    split = {}
    for era in sorted({p.era for p in pieces}):
        works = defaultdict(list)
        for p in pieces:
            if p.era == era:
                works[p.work].append(p)
        names = sorted(works)
        order = _rng(seed, "split", era).permutation(len(names))
        n_files = sum(len(v) for v in works.values())
        target = round(test_fraction * n_files) if len(names) > 1 else 0
        n_test = 0
        for i in order:
            group = works[names[i]]
            side = "testing" if n_test < target and n_test + len(group) <= target + max(1, target // 10) else "training"
            n_test += len(group) if side == "testing" else 0
            for p in group:
                split[p.rel] = side
    return split


def clip_capacity(duration_seconds: float) -> int:
    """Clips a piece can give without much overlap: one per 8.91 s, at least one if it is long enough."""
    return max(1, int(duration_seconds // CLIP_SECONDS)) if duration_seconds >= CLIP_SECONDS + 0.5 else 0


def allocate_clips(capacities: list[int], target: int, rng: np.random.Generator) -> list[int]:
    """Clips per piece summing to `target` (or all the capacity there is), as even as possible.

    Every piece gets c clips (capped by its capacity); a seeded subset gets c + 1 to hit the target.
    """
    if not capacities or target <= 0:
        return [0] * len(capacities)
    c = 0
    while c < max(capacities) and sum(min(c + 1, cap) for cap in capacities) <= target:
        c += 1
    counts = [min(c, cap) for cap in capacities]
    room = [i for i, cap in enumerate(capacities) if cap > c]
    extra = min(target - sum(counts), len(room))
    for i in rng.permutation(room)[:extra] if extra > 0 else []:
        counts[int(i)] += 1
    return counts


# ----------------------------------------------------------------------------------------- MIDI windows


@dataclass
class Score:
    """A MIDI file flattened to seconds. events: (seconds, voice, kind, a, b) sorted by time.

    kind: "on" (note a, velocity b), "off" (note a), "cc" (control a, value b), "pw" (pitch a).
    A voice is one (track, channel) pair that plays notes; percussion (channel 10) is dropped.
    """
    events: list[tuple[float, int, str, int, int]]
    n_voices: int
    duration: float
    sounding: list[tuple[float, float]] = field(default_factory=list)  # merged note intervals, seconds
    pitches: list[int] = field(default_factory=list)  # every note's MIDI pitch, for register bands

    def activity(self, start: float, end: float) -> float:
        """Fraction of [start, end) in which at least one note sounds."""
        covered = 0.0
        i = max(0, bisect_right([s for s, _ in self.sounding], start) - 1)
        for s, e in self.sounding[i:]:
            if s >= end:
                break
            covered += max(0.0, min(e, end) - max(s, start))
        return covered / (end - start)


def load_score(path: str) -> Score:
    """Parse a MIDI file (type 0/1) into a Score; raises CorpusError for unreadable files."""
    import mido

    try:
        mid = mido.MidiFile(path, clip=True)
    except Exception as exc:  # mido raises several types for broken files
        raise CorpusError(f"Cannot read MIDI file {path}: {exc}") from exc
    tpb = mid.ticks_per_beat or 480
    tempo_points = []
    for track in mid.tracks:
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.type == "set_tempo":
                tempo_points.append((tick, msg.tempo))
    tempo_points.sort()
    ticks, seconds, tempos = [0], [0.0], [500_000]
    for tick, tempo in tempo_points:
        seconds.append(seconds[-1] + (tick - ticks[-1]) * tempos[-1] / (1e6 * tpb))
        ticks.append(tick)
        tempos.append(tempo)

    def to_seconds(tick: int) -> float:
        i = bisect_right(ticks, tick) - 1
        return seconds[i] + (tick - ticks[i]) * tempos[i] / (1e6 * tpb)

    voices: dict[tuple[int, int], int] = {}
    raw = []
    for t_index, track in enumerate(mid.tracks):
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.is_meta or not hasattr(msg, "channel") or msg.channel == 9:
                continue
            key = (t_index, msg.channel)
            if msg.type == "note_on" and msg.velocity > 0:
                raw.append((tick, key, "on", msg.note, msg.velocity))
            elif msg.type in ("note_off", "note_on"):
                raw.append((tick, key, "off", msg.note, 0))
            elif msg.type == "control_change" and msg.control not in _CARRIED_CONTROLS_EXCLUDED:
                raw.append((tick, key, "cc", msg.control, msg.value))
            elif msg.type == "pitchwheel":
                raw.append((tick, key, "pw", msg.pitch, 0))
    for _, key, kind, _, _ in raw:
        if kind == "on" and key not in voices:
            voices[key] = len(voices)
    # offs sort before ons at the same tick, so a repeated note is not cut by its own release
    kind_order = {"off": 0, "cc": 1, "pw": 1, "on": 2}
    raw.sort(key=lambda e: (e[0], kind_order[e[2]]))
    events = [(to_seconds(tick), voices[key], kind, a, b) for tick, key, kind, a, b in raw if key in voices]
    intervals, open_notes = [], {}
    for t, v, kind, a, _ in events:
        if kind == "on":
            open_notes.setdefault((v, a), t)
        elif kind == "off" and (v, a) in open_notes:
            intervals.append((open_notes.pop((v, a)), t))
    end = max([t for t, *_ in events], default=0.0)
    intervals += [(s, end) for s in open_notes.values()]
    merged: list[tuple[float, float]] = []
    for s, e in sorted(intervals):
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return Score(events, len(voices), end, merged, [a for _, _, kind, a, _ in events if kind == "on"])


def choose_offsets(score: Score, n: int, rng: np.random.Generator) -> tuple[list[float], list[dict]]:
    """Up to n clip start times (s), one per equal stratum of the piece, where notes sound.

    Returns (offsets, skipped) where skipped lists strata with no window sounding enough.
    """
    span = score.duration - CLIP_SECONDS
    if span < 0 or n <= 0:
        return [], [{"reason": f"piece shorter than a clip ({score.duration:.1f} s)"}] if n > 0 else []
    edges = np.linspace(0.0, span, n + 1)
    offsets, skipped = [], []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        best, best_activity = None, -1.0
        for candidate in rng.uniform(lo, max(hi, lo + 1e-6), size=12):
            activity = score.activity(candidate, candidate + CLIP_SECONDS)
            if activity > best_activity:
                best, best_activity = float(candidate), activity
            if activity >= MIN_ACTIVITY:
                break
        if best_activity >= FALLBACK_ACTIVITY:
            offsets.append(round(best, 3))
        else:
            skipped.append({"offset_seconds": round(best, 3), "reason": f"notes sound only {best_activity:.0%} of the window"})
    return offsets, skipped


def choose_programs(score_voices: int, rng: np.random.Generator) -> tuple[list[int], bool]:
    """Programs for one clip: 1-3 instruments from PROGRAM_POOL, drawn the same way for every score.

    Returns (programs, by_register). With at least as many voices as instruments, programs[v] is voice
    v's program (every instrument plays at least one voice). With fewer voices (a one-track piano
    score and 3 instruments), by_register is True and programs[b] plays pitch band b, low to high, so
    the number of instruments never depends on how the score was encoded, and so never on the era.
    """
    pool = np.array(sorted(PROGRAM_POOL))
    n_instruments = int(rng.choice(INSTRUMENTS_PER_CLIP, p=INSTRUMENTS_PER_CLIP_P))
    instruments = [int(p) for p in rng.choice(pool, size=n_instruments, replace=False)]
    if score_voices < n_instruments:
        return instruments, True
    per_voice = instruments + [int(p) for p in rng.choice(instruments, size=score_voices - n_instruments)]
    rng.shuffle(per_voice)
    return per_voice, False


@dataclass
class Segment:
    """One clip inside a render: score window [offset - pre_roll, offset + CLIP_SECONDS).

    programs: one per part; a part is a voice, or with by_register a pitch band of the whole score
    (band edges at pitch quantiles of the piece). Each part gets its own MIDI channel.
    """
    score: Score
    offset: float
    programs: list[int]
    by_register: bool = False
    base: float = 0.0  # where the window starts in the rendered file, seconds
    pre_roll: float = 0.0


def _window_messages(seg: Segment):
    """(seconds in render, order, mido message) for one segment, and the segment's length in seconds."""
    import mido

    start = max(0.0, seg.offset - PRE_ROLL_SECONDS)
    end = seg.offset + CLIP_SECONDS
    seg.pre_roll = seg.offset - start
    n_parts = len(seg.programs)
    channels = [_OUT_CHANNELS[p % len(_OUT_CHANNELS)] for p in range(n_parts)]
    if seg.by_register:
        quantiles = np.quantile(seg.score.pitches or [60], [b / n_parts for b in range(1, n_parts)])
        edges = [float(q) + 0.5 for q in quantiles]

        def note_channel(v, note):
            return channels[bisect_right(edges, note)]

        def voice_channels(v):  # pedal, volume and bends of any voice reach every band
            return channels
    else:
        def note_channel(v, note):
            return channels[v % n_parts]

        def voice_channels(v):
            return [channels[v % n_parts]]

    held: dict[tuple[int, int], int] = {}
    controls: dict[tuple[int, int], int] = {}
    pitch: dict[int, int] = {}
    out = []
    i = 0
    events = seg.score.events
    while i < len(events) and events[i][0] < start:
        _, v, kind, a, b = events[i]
        if kind == "on":
            held[(v, a)] = b
        elif kind == "off":
            held.pop((v, a), None)
        elif kind == "cc":
            controls[(v, a)] = b
        else:
            pitch[v] = a
        i += 1
    t0 = seg.base
    for channel, program in zip(channels, seg.programs, strict=True):
        out.append((t0, 0, mido.Message("control_change", channel=channel, control=121, value=0)))
        out.append((t0, 1, mido.Message("program_change", channel=channel, program=program)))
    for (v, control), value in controls.items():
        out += [(t0, 2, mido.Message("control_change", channel=c, control=control, value=value)) for c in voice_channels(v)]
    for v, value in pitch.items():
        out += [(t0, 2, mido.Message("pitchwheel", channel=c, pitch=value)) for c in voice_channels(v)]
    for (v, note), velocity in held.items():
        out.append((t0, 3, mido.Message("note_on", channel=note_channel(v, note), note=note, velocity=velocity)))
    while i < len(events) and events[i][0] < end:
        t, v, kind, a, b = events[i]
        at = t0 + t - start
        if kind == "on":
            out.append((at, 3, mido.Message("note_on", channel=note_channel(v, a), note=a, velocity=b)))
        elif kind == "off":
            out.append((at, 2, mido.Message("note_off", channel=note_channel(v, a), note=a)))
        elif kind == "cc":
            out += [(at, 2, mido.Message("control_change", channel=c, control=a, value=b)) for c in voice_channels(v)]
        else:
            out += [(at, 2, mido.Message("pitchwheel", channel=c, pitch=a)) for c in voice_channels(v)]
        i += 1
    stop = t0 + end - start
    for channel in sorted(set(channels)):
        out.append((stop, 4, mido.Message("control_change", channel=channel, control=64, value=0)))
        out.append((stop, 5, mido.Message("control_change", channel=channel, control=123, value=0)))
    return out, stop - t0


def write_render_midi(segments: list[Segment], path: str) -> float:
    """Write one type-0 MIDI holding all segments one after another; returns its length in seconds."""
    import mido

    messages, t = [], 0.0
    for seg in segments:
        seg.base = t
        seg_messages, length = _window_messages(seg)
        messages += seg_messages
        t += length + GAP_SECONDS
    messages.sort(key=lambda m: (m[0], m[1]))
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=_OUT_TEMPO, time=0)])
    last_tick = 0
    for at, _, msg in messages:
        tick = int(round(at * _TICKS_PER_SECOND))
        track.append(msg.copy(time=tick - last_tick))
        last_tick = tick
    track.append(mido.MetaMessage("end_of_track", time=int(round(t * _TICKS_PER_SECOND)) - last_tick))
    mid = mido.MidiFile(type=0, ticks_per_beat=_OUT_TICKS_PER_BEAT)
    mid.tracks.append(track)
    mid.save(path)
    return t


def render_midi(midi_path: str, soundfont: str, wav_path: str, fluidsynth: str = "fluidsynth") -> np.ndarray:
    """Synthesize with fluidsynth at SAMPLE_RATE; returns float32 mono samples."""
    import soundfile as sf

    cmd = [fluidsynth, "-ni", "-q", "-g", "0.5", "-r", str(SAMPLE_RATE), "-T", "wav", "-O", "float",
           "-F", wav_path, soundfont, midi_path]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if done.returncode != 0 or not os.path.exists(wav_path):
        raise CorpusError(f"fluidsynth failed ({' '.join(cmd)}): {done.stderr.strip()[-500:]}")
    data, rate = sf.read(wav_path, dtype="float32", always_2d=True)
    if rate != SAMPLE_RATE:
        raise CorpusError(f"fluidsynth wrote {rate} Hz instead of {SAMPLE_RATE} Hz")
    return data.mean(axis=1)


def silence_reason(clip: np.ndarray) -> str | None:
    """Why a clip counts as near-silent, or None: overall RMS, or too many quiet 0.1-s frames."""
    rms = float(np.sqrt(np.mean(clip.astype(np.float64) ** 2)))
    if not np.isfinite(rms) or rms < SILENT_RMS:
        return f"near-silent (RMS {rms:.1e})"
    frame = SAMPLE_RATE // 10
    frames = clip[: len(clip) // frame * frame].reshape(-1, frame)
    frame_rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    quiet = float(np.mean(frame_rms < frame_rms.max() * 0.01))
    if quiet > SILENT_FRAME_FRACTION:
        return f"near-silent ({quiet:.0%} of the clip 40 dB below its peak)"
    return None


def normalize_level(clip: np.ndarray) -> np.ndarray:
    """Scale to RMS TARGET_RMS (-20 dBFS), then down if the peak would pass 0.99."""
    rms = float(np.sqrt(np.mean(clip.astype(np.float64) ** 2)))
    gain = TARGET_RMS / max(rms, 1e-12)
    peak = float(np.max(np.abs(clip))) * gain
    if peak > 0.99:
        gain *= 0.99 / peak
    return (clip * gain).astype(np.float32)


# ------------------------------------------------------------------------------------------ atomic files


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    atomic_write_json(path, obj)


def write_audio_atomic(path: str | os.PathLike, samples: np.ndarray, audio_format: str) -> None:
    import soundfile as sf

    fmt, subtype = AUDIO_FORMATS[audio_format]
    with atomic_file(path) as f:
        sf.write(f, samples, SAMPLE_RATE, format=fmt, subtype=subtype)


def place_file(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Put src at dst atomically: a hard link (no extra space) or a copy when linking is not possible."""
    dst = Path(dst)
    if dst.exists() and os.path.samefile(src, dst):
        return
    tmp = dst.with_name(f".{dst.name}.tmp")
    if tmp.exists():
        tmp.unlink()
    try:
        os.link(src, tmp)
        os.replace(tmp, dst)
    except OSError:
        with atomic_file(dst) as f, open(src, "rb") as source:
            shutil.copyfileobj(source, f)


# ---------------------------------------------------------------------------------------- render workers


@dataclass
class PieceJob:
    piece: Piece
    n_clips: int
    staged_dir: str  # where this piece's clips + record go


def _piece_slug(piece: Piece) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", piece.rel.rsplit(".", 1)[0].replace("/", "__"))


def _record_path(job: PieceJob) -> Path:
    return Path(job.staged_dir) / f"{_piece_slug(job.piece)}.json"


def _job_done(job: PieceJob) -> dict | None:
    """The saved record of a finished piece if it and all its clips exist (resuming)."""
    path = _record_path(job)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if record.get("n_clips_asked") != job.n_clips or record.get("plan_version") != PLAN_VERSION:
        return None
    if all((Path(job.staged_dir) / c["staged"]).is_file() for c in record["clips"]):
        return record
    return None


def render_pieces(jobs: list[PieceJob], soundfonts: list[str], seed: int, audio_format: str,
                  fluidsynth: str) -> list[dict]:
    """Worker: plan, render and stage the clips of several pieces; returns one record per piece."""
    records, pending, segments_by_font = [], [], defaultdict(list)
    for job in jobs:
        done = _job_done(job)
        if done is not None:
            records.append(done)
            continue
        piece = job.piece
        if job.n_clips == 0:  # nothing asked of this piece: do not spend time parsing it
            records.append({"piece": piece.rel, "era": piece.era, "work": piece.work, "n_clips_asked": 0,
                            "plan_version": PLAN_VERSION, "clips": [], "skipped": []})
            continue
        record = {"piece": piece.rel, "era": piece.era, "work": piece.work, "n_clips_asked": job.n_clips,
                  "plan_version": PLAN_VERSION, "clips": [], "skipped": []}
        try:
            score = load_score(piece.path)
        except CorpusError as exc:
            record["skipped"].append({"reason": str(exc)})
            record["error"] = str(exc)
            records.append(record)
            continue
        record["duration_seconds"] = round(score.duration, 2)
        rng = _rng(seed, "clips", piece.rel)
        n = min(job.n_clips, clip_capacity(score.duration))
        offsets, skipped = choose_offsets(score, n, rng)
        record["skipped"] += skipped
        planned = []
        for j, offset in enumerate(offsets):
            clip_rng = _rng(seed, "timbre", piece.rel, j)
            programs, by_register = choose_programs(score.n_voices, clip_rng)
            font = soundfonts[int(clip_rng.integers(len(soundfonts)))]
            seg = Segment(score, offset, programs, by_register)
            segments_by_font[font].append(seg)
            planned.append((j, seg, font))
        pending.append((job, record, planned))
    rendered: dict[int, np.ndarray] = {}
    with tempfile.TemporaryDirectory(prefix="mvnet-render-") as tmp:
        for k, (font, segments) in enumerate(segments_by_font.items()):
            midi_path, wav_path = os.path.join(tmp, f"r{k}.mid"), os.path.join(tmp, f"r{k}.wav")
            write_render_midi(segments, midi_path)
            wave = render_midi(midi_path, font, wav_path, fluidsynth)
            os.remove(wav_path)
            for seg in segments:
                start = int(round((seg.base + seg.pre_roll) * SAMPLE_RATE))
                clip = wave[start:start + CLIP_SAMPLES]
                if len(clip) < CLIP_SAMPLES:
                    clip = np.pad(clip, (0, CLIP_SAMPLES - len(clip)))
                rendered[id(seg)] = clip
    for job, record, planned in pending:
        slug = _piece_slug(job.piece)
        for j, seg, font in planned:
            clip = rendered[id(seg)]
            entry = {"offset_seconds": seg.offset, "soundfont": Path(font).name,
                     "programs": sorted(set(seg.programs)), "by_register": seg.by_register,
                     "instruments": [PROGRAM_POOL[p] for p in sorted(set(seg.programs))]}
            reason = silence_reason(clip)
            if reason:
                record["skipped"].append({**entry, "reason": reason})
                continue
            name = f"{slug}__c{j}.{audio_format}"
            write_audio_atomic(Path(job.staged_dir) / name, normalize_level(clip), audio_format)
            record["clips"].append({"staged": name, "index": j, **entry})
        write_json_atomic(_record_path(job), record)
        records.append(record)
    return records


def _render_task(args) -> list[dict]:
    return render_pieces(*args)


# ---------------------------------------------------------------------------------------------- paintings


def split_paintings(folder: Path, era: str, test_fraction: float, seed: int) -> dict[str, list[Path]]:
    """{"training": [...], "testing": [...]} paintings of one era, seeded; test paintings are never trained on."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS) if folder.is_dir() else []
    order = _rng(seed, "paintings", era).permutation(len(files))
    n_test = max(1, round(test_fraction * len(files))) if len(files) >= 2 else 0
    return {"testing": [files[i] for i in order[:n_test]], "training": [files[i] for i in order[n_test:]]}


def stage_painting(src: Path, staged_dir: Path, size: int) -> Path | None:
    """Resize one painting to size x size RGB JPEG under staged_dir (skipped if already there)."""
    from PIL import Image

    dst = staged_dir / f"{src.stem}.jpg"
    if dst.is_file():
        return dst
    try:
        with Image.open(src) as img, atomic_file(dst) as f:
            img.convert("RGB").resize((size, size), Image.LANCZOS).save(f, format="JPEG", quality=95)
    except OSError:
        return None
    return dst


def assign_images(pool: list[Path], n_audio: int, rng: np.random.Generator) -> list[Path]:
    """3*n_audio image slots from the pool: shuffled passes over it, cycling when it is too small."""
    slots: list[Path] = []
    while pool and len(slots) < 3 * n_audio:
        slots += [pool[i] for i in rng.permutation(len(pool))]
    return slots[: 3 * n_audio]


# ------------------------------------------------------------------------------------------------- build


@dataclass
class BuildSettings:
    midi: str
    paintings: str
    out: str
    soundfonts: list[str] | None = None
    seed: int = 0
    test_fraction: float = DEFAULT_TEST_FRACTION
    train_clips_per_era: int = DEFAULT_TRAIN_CLIPS_PER_ERA
    image_size: int = DEFAULT_IMAGE_SIZE
    audio_format: str = "ogg"
    jobs: int = 2
    eras: tuple[str, ...] = ERAS
    progress: bool = True


def _fluidsynth_version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return next((line.strip() for line in out.splitlines() if "version" in line.lower()), "unknown")


def build_corpus(settings: BuildSettings) -> dict:
    """Build (or resume) the starter corpus; returns the manifest (also written to <out>/manifest.json)."""
    from tqdm import tqdm

    started = time.time()
    if settings.audio_format not in AUDIO_FORMATS:
        raise CorpusError(f"audio_format must be one of {', '.join(AUDIO_FORMATS)}")
    unknown = [e for e in settings.eras if e not in ERAS]
    if unknown:
        raise CorpusError(f"Unknown era(s) {unknown}; eras are {', '.join(ERAS)}.")
    if not 0 < settings.test_fraction < 1:
        raise CorpusError("test_fraction must be between 0 and 1.")
    fluidsynth = find_fluidsynth()
    fonts = [str(p) for p in find_soundfonts(settings.soundfonts)]
    pieces = read_midi_index(settings.midi, settings.eras)
    split = split_by_work(pieces, settings.test_fraction, settings.seed)
    out = Path(settings.out)
    staged_root = out / "_build"

    # clips per piece, chosen per era so its training side reaches the target and the test side
    # gets the same clips-per-piece rate
    per_piece_clips = {}
    for era in settings.eras:
        era_pieces = [p for p in pieces if p.era == era]
        n_train = sum(split[p.rel] == "training" for p in era_pieces)
        for side in ("training", "testing"):
            side_pieces = [p for p in era_pieces if split[p.rel] == side]
            target = settings.train_clips_per_era
            if side == "testing":
                target = round(target * len(side_pieces) / max(1, n_train))
            # no duration in the index: assume a long piece; the worker caps by the real length
            caps = [clip_capacity(p.duration_seconds or 3600.0) for p in side_pieces]
            counts = allocate_clips(caps, target, _rng(settings.seed, "allocate", era, side))
            per_piece_clips.update({p.rel: n for p, n in zip(side_pieces, counts, strict=True)})
    jobs = []
    for p in pieces:
        staged_dir = staged_root / "clips" / p.era
        staged_dir.mkdir(parents=True, exist_ok=True)
        jobs.append(PieceJob(p, per_piece_clips[p.rel], str(staged_dir)))
    tasks = [(jobs[i:i + PIECES_PER_TASK], fonts, settings.seed, settings.audio_format, fluidsynth)
             for i in range(0, len(jobs), PIECES_PER_TASK)]
    records: list[dict] = []
    bar = tqdm(total=len(jobs), desc="rendering pieces", unit="piece", disable=not settings.progress)
    if settings.jobs > 1 and len(tasks) > 1:
        with get_context("fork").Pool(settings.jobs) as pool:
            for result in pool.imap_unordered(_render_task, tasks):
                records += result
                bar.update(len(result))
    else:
        for task in tasks:
            result = _render_task(task)
            records += result
            bar.update(len(result))
    bar.close()
    render_seconds = time.time() - started

    by_piece = {r["piece"]: r for r in records}
    manifest_clips, counts, works, notes, skipped = [], {}, {}, [], []
    for era in settings.eras:
        label = ERAS.index(era)
        counts[era], works[era] = {}, {}
        painting_split = split_paintings(Path(settings.paintings) / era, era, settings.test_fraction, settings.seed)
        staged_paintings = staged_root / f"paintings{settings.image_size}" / era
        staged_paintings.mkdir(parents=True, exist_ok=True)
        for side in ("training", "testing"):
            era_dir = out / side / era
            era_dir.mkdir(parents=True, exist_ok=True)
            side_pieces = sorted(p.rel for p in pieces if p.era == era and split[p.rel] == side)
            clips = []
            for rel in side_pieces:
                record = by_piece[rel]
                skipped += [{"piece": rel, **s} for s in record["skipped"]]
                clips += [(record, c) for c in record["clips"]]
            order = _rng(settings.seed, "order", era, side).permutation(len(clips))
            clips = [clips[i] for i in order]
            K = len(clips)
            pool, unreadable = [], []
            for src in painting_split[side]:
                staged = stage_painting(src, staged_paintings, settings.image_size)
                (pool.append((src, staged)) if staged else unreadable.append(src.name))
            slots = assign_images(pool, K, _rng(settings.seed, "images", era, side))
            if K and len(pool) < 3 * K:
                notes.append(f"{side}/{era}: {len(pool)} paintings for {3 * K} image slots; paintings are "
                             f"reused ({3 * K / max(1, len(pool)):.1f} times each on average).")
            if unreadable:
                notes.append(f"{side}/{era}: {len(unreadable)} unreadable paintings skipped: {unreadable[:5]}")
            if K == 0:
                notes.append(f"{side}/{era}: no clips (no usable MIDI on this side).")
            wanted = set()
            for k, (record, clip) in enumerate(clips):
                name = f"a{k}.{settings.audio_format}"
                place_file(staged_root / "clips" / era / clip["staged"], era_dir / name)
                wanted.add(name)
                images = [f"i{k + m * K}.jpg" for m in range(3)]
                manifest_clips.append({
                    "file": f"{side}/{era}/{name}", "split": side, "era": era, "label": label,
                    "piece": record["piece"], "work": record["work"], "offset_seconds": clip["offset_seconds"],
                    "soundfont": clip["soundfont"], "programs": clip["programs"],
                    "instruments": clip["instruments"], "by_register": clip.get("by_register", False),
                    "images": images,
                    "paintings": [slots[k + m * K][0].name for m in range(3)] if slots else []})
            for n, (_, staged) in enumerate(slots):
                place_file(staged, era_dir / f"i{n}.jpg")
                wanted.add(f"i{n}.jpg")
            for stale in era_dir.iterdir():
                if re.fullmatch(r"[ai]\d+\.\w+", stale.name) and stale.name not in wanted:
                    stale.unlink()
            side_works = sorted({by_piece[rel]["work"] for rel in side_pieces})
            works[era][side] = side_works
            counts[era][side] = {
                "pieces": len(side_pieces), "works": len(side_works), "clips": K, "images": len(slots),
                "paintings": len(pool), "paintings_reused": bool(K and len(pool) < 3 * K),
                "clips_planned": sum(per_piece_clips[rel] for rel in side_pieces)}
    short = [e for e in settings.eras if counts[e]["training"]["clips"] < MIN_TRAIN_CLIPS_PER_ERA]
    if short:
        notes.append(f"Eras below {MIN_TRAIN_CLIPS_PER_ERA} training clips: {', '.join(short)}.")
    manifest = {
        "format": "mvnet-starter-corpus", "format_version": 1,
        "layout": "Musart-Dataset: {training,testing}/<era>/a{k} audio, i{n} images; a{k} pairs with "
                  "i{k}, i{k+K}, i{k+2K}",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "build_seconds": round(time.time() - started, 1), "render_seconds": round(render_seconds, 1),
        "settings": {**{k: v for k, v in asdict(settings).items() if k not in ("progress", "soundfonts")},
                     "eras": list(settings.eras), "sample_rate": SAMPLE_RATE, "clip_samples": CLIP_SAMPLES,
                     "clip_seconds": CLIP_SECONDS, "audio_codec": "/".join(AUDIO_FORMATS[settings.audio_format]),
                     "pre_roll_seconds": PRE_ROLL_SECONDS, "target_rms": TARGET_RMS,
                     "min_activity": MIN_ACTIVITY},
        "soundfonts": [{"name": Path(f).name, "path": f, "bytes": os.path.getsize(f)} for f in fonts],
        "fluidsynth": _fluidsynth_version(fluidsynth),
        "program_pool": {str(k): v for k, v in PROGRAM_POOL.items()},
        "counts": counts, "short_eras": short, "notes": notes, "works": works,
        "clips": manifest_clips, "skipped": skipped,
    }
    write_json_atomic(out / "manifest.json", manifest)
    return manifest


def summary_lines(manifest: dict) -> list[str]:
    """A short human-readable account of a manifest: clips and paintings per era and side."""
    lines = [f"{'era':12} {'train clips':>11} {'test clips':>10} {'train works':>11} {'test works':>10} "
             f"{'train paint.':>12} {'test paint.':>11}"]
    for era, c in manifest["counts"].items():
        tr, te = c["training"], c["testing"]
        lines.append(f"{era:12} {tr['clips']:>11} {te['clips']:>10} {tr['works']:>11} {te['works']:>10} "
                     f"{tr['paintings']:>12} {te['paintings']:>11}")
    lines += [f"note: {n}" for n in manifest["notes"]]
    lines.append(f"skipped windows: {len(manifest['skipped'])}; build {manifest['build_seconds']} s")
    return lines


# --------------------------------------------------------------------------------------------------- CLI


def _folder_bytes(path: Path) -> int:
    seen, total = set(), 0
    for p in path.rglob("*"):
        if p.is_file():
            st = p.stat()
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.corpus", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build or resume the starter corpus from MIDI + paintings")
    b.add_argument("--midi", required=True, help="folder with <era>/*.mid (and index.csv)")
    b.add_argument("--paintings", required=True, help="folder with <era>/*.jpg")
    b.add_argument("--out", required=True, help="corpus folder to write (Musart layout)")
    b.add_argument("--soundfont", action="append", help="a .sf2 file or folder (repeatable); default: system folders")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--test-fraction", type=float, default=DEFAULT_TEST_FRACTION)
    b.add_argument("--train-clips-per-era", type=int, default=DEFAULT_TRAIN_CLIPS_PER_ERA)
    b.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE)
    b.add_argument("--audio-format", choices=sorted(AUDIO_FORMATS), default="ogg")
    b.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    b.add_argument("--eras", nargs="+", default=list(ERAS), help="subset of eras (all five by default)")
    i = sub.add_parser("inspect", help="read a Musart-layout corpus and print what the reader finds")
    i.add_argument("root")
    c = sub.add_parser("cache", help="compute (or reuse) log-mel features for every clip of a corpus")
    c.add_argument("root")
    c.add_argument("--cache-dir", help="default: <root>/_features")
    c.add_argument("--device", default=None, help="torch device (default: CUDA when present, else CPU)")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            manifest = build_corpus(BuildSettings(
                midi=args.midi, paintings=args.paintings, out=args.out, soundfonts=args.soundfont, seed=args.seed,
                test_fraction=args.test_fraction, train_clips_per_era=args.train_clips_per_era,
                image_size=args.image_size, audio_format=args.audio_format, jobs=args.jobs, eras=tuple(args.eras)))
            print("\n".join(summary_lines(manifest)))
            print(f"size on disk: {_folder_bytes(Path(args.out)) / 1e6:.1f} MB ({args.out})")
        elif args.command == "inspect":
            from train.datasets import read_musart

            read_musart(args.root, log=print)  # prints the report
        elif args.command == "cache":
            from train.datasets import read_musart
            from train.feature_cache import FeatureCache

            corpus = read_musart(args.root)
            cache = FeatureCache(args.cache_dir or Path(args.root) / "_features", device=args.device)
            # training rows first, then testing: each split is then one contiguous memmap slice
            paths = [item.path for side in ("training", "testing") for item in corpus.items(side)]
            cache.features_for(paths, progress=True)
            stats = cache.last_stats
            print(f"feature cache {cache.cache_dir}: {len(paths)} clips, computed {stats.computed}, reused "
                  f"{stats.reused}, {stats.seconds:.1f} s, {_folder_bytes(Path(cache.cache_dir)) / 1e6:.1f} MB")
    except (CorpusError, ValueError) as exc:  # CorpusError, MusartError, AudioError: messages for a person
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
