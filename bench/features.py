"""Feature speed on this machine: torch batched log-mel vs a librosa loop, and one mp3 -> features.

    python bench/features.py [--clips 64] [--repeats 3] [--threads N]

Prints median wall times (warm) and the librosa / torch ratio. Needs no data: the audio is generated.
On a machine busy with other work, one clip can run several times faster with --threads 1.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mvnet.audio import (  # noqa: E402
    CLIP_SAMPLES,
    HOP_LENGTH,
    N_FFT,
    N_MELS,
    N_SEGMENTS,
    SAMPLE_RATE,
    SEGMENT_SAMPLES,
    clip_windows,
    load_audio,
    log_mel_features,
)


def median_seconds(function, repeats):
    function()  # warm-up: filter bank, numba caches, allocator
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def librosa_loop(clips):
    import librosa

    out = np.empty((len(clips), N_SEGMENTS, N_MELS, SEGMENT_SAMPLES // HOP_LENGTH + 1), np.float32)
    for i, clip in enumerate(clips):
        for s in range(N_SEGMENTS):
            power = librosa.feature.melspectrogram(
                y=clip[s * SEGMENT_SAMPLES: (s + 1) * SEGMENT_SAMPLES], sr=SAMPLE_RATE, n_fft=N_FFT,
                hop_length=HOP_LENGTH, n_mels=N_MELS, window="hann", center=True, pad_mode="constant",
            )
            out[i, s] = librosa.power_to_db(power, ref=1.0, top_db=80)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    clips = (0.1 * rng.standard_normal((args.clips, CLIP_SAMPLES))).astype(np.float32)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.clips} clips of {CLIP_SAMPLES} samples")

    torch_s = median_seconds(lambda: log_mel_features(clips, device="cpu"), args.repeats)
    librosa_s = median_seconds(lambda: librosa_loop(clips), args.repeats)
    print(f"torch batched : {torch_s * 1000:8.1f} ms  ({torch_s / args.clips * 1000:.2f} ms/clip)")
    print(f"librosa loop  : {librosa_s * 1000:8.1f} ms  ({librosa_s / args.clips * 1000:.2f} ms/clip)")
    print(f"ratio librosa / torch: {librosa_s / torch_s:.1f}x")

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "clip.mp3"
        t = np.arange(int(8.91 * 44100)) / 44100
        tone = 0.3 * np.sin(2 * np.pi * 440 * t)
        sf.write(path, np.stack([tone, tone], axis=1), 44100, format="MP3")

        def one_file():
            return log_mel_features(clip_windows(load_audio(path)).samples, device="cpu")

        load_s = median_seconds(lambda: load_audio(path), 20)
        file_s = median_seconds(one_file, 20)
    print(f"8.91 s stereo 44.1 kHz mp3: load {load_s * 1000:.1f} ms; load + windows + features {file_s * 1000:.1f} ms")


if __name__ == "__main__":
    main()
