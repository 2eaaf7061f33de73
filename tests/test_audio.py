"""mvnet.audio: every loader path, every bad input, windows, features against librosa, statistics.

All audio is generated here (sines, enveloped chords, noise) into tmp_path.
"""

import io

import numpy as np
import pytest
import soundfile as sf
import torch

from mvnet import audio
from mvnet.audio import (
    CLIP_SAMPLES,
    CLIP_SECONDS,
    HOP_LENGTH,
    N_FFT,
    N_MELS,
    N_SEGMENTS,
    SAMPLE_RATE,
    SEGMENT_FRAMES,
    SEGMENT_SAMPLES,
    AudioError,
    LogMel,
    clip_windows,
    feature_statistics,
    load_audio,
    log_mel_features,
    standardize,
)

# Measured max |torch - librosa| on these signals: 0.0014 dB (pure sine), 0.0005 dB (chords), 1e-5 dB (noise).
LIBROSA_TOLERANCE_DB = 0.01

FORMATS = {  # extension -> (soundfile format, subtype)
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
}


def sine(freq, seconds, sr=SAMPLE_RATE, amplitude=0.5):
    t = np.arange(int(round(seconds * sr))) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def music(seconds, sr=SAMPLE_RATE, seed=0):
    """Enveloped harmonic notes every 0.5 s plus a little noise, peak 0.3: stands in for a piece."""
    rng = np.random.default_rng(seed)
    wave = np.zeros(int(round(seconds * sr)))
    note = np.arange(int(2.0 * sr)) / sr  # each note rings for 2 s (decayed to 0.25 %)
    for start in range(0, len(wave), sr // 2):
        f0 = 110 * 2 ** (rng.integers(0, 36) / 12)
        harmonics = sum(np.sin(2 * np.pi * f0 * h * note) / h for h in range(1, 6))
        span = wave[start:start + len(note)]
        span += (np.exp(-3 * note) * harmonics)[: len(span)]
    wave += 0.01 * rng.standard_normal(len(wave))
    return (0.3 * wave / np.abs(wave).max()).astype(np.float32)


def peak_frequency(wave, sr=SAMPLE_RATE):
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return np.argmax(spectrum) * sr / len(wave)


def write(path, wave, sr=SAMPLE_RATE, ext=None):
    fmt, subtype = FORMATS[ext or path.suffix[1:]]
    sf.write(path, wave, sr, format=fmt, subtype=subtype)
    return path


def assert_model_wave(wave):
    assert wave.dtype == np.float32 and wave.ndim == 1 and wave.flags.c_contiguous
    assert np.isfinite(wave).all() and np.abs(wave).max() <= 1.0


# ---------------------------------------------------------------------------------------------- loading


@pytest.mark.parametrize("ext", list(FORMATS))
def test_each_file_format_loads_as_mono_at_model_rate(tmp_path, ext):
    path = write(tmp_path / f"tone.{ext}", sine(440, 3.0, sr=44100), sr=44100)
    wave = load_audio(path)
    assert_model_wave(wave)
    assert len(wave) / SAMPLE_RATE == pytest.approx(3.0, abs=0.06)  # mp3/ogg codecs pad a little
    assert peak_frequency(wave) == pytest.approx(440, abs=2)
    assert np.abs(wave).max() == pytest.approx(0.5, abs=0.05)
    assert np.array_equal(load_audio(str(path)), wave)


@pytest.mark.parametrize("ext", ["wav", "mp3"])
def test_bytes_load_like_the_file(tmp_path, ext):
    path = write(tmp_path / f"tone.{ext}", sine(330, 2.0))
    from_bytes = load_audio(path.read_bytes())
    assert np.array_equal(from_bytes, load_audio(path))
    assert peak_frequency(from_bytes) == pytest.approx(330, abs=2)


@pytest.mark.parametrize("sr,channels", [(44100, 2), (8000, 1), (48000, 1), (48000, 6), (16000, 2)])
def test_any_rate_and_channel_count_is_resampled_and_downmixed(tmp_path, sr, channels):
    tone = sine(440, 2.5, sr=sr)
    path = write(tmp_path / "tone.wav", np.stack([tone] * channels, axis=1), sr=sr)
    wave = load_audio(path)
    assert len(wave) == int(np.ceil(len(tone) * SAMPLE_RATE / sr))
    assert peak_frequency(wave) == pytest.approx(440, abs=2)
    assert np.abs(wave).max() == pytest.approx(0.5, abs=0.02)


def test_downmix_is_the_channel_mean(tmp_path):
    left, right = sine(440, 2.0, amplitude=0.6), sine(440, 2.0, amplitude=0.2)
    wave = load_audio(write(tmp_path / "stereo.flac", np.stack([left, right], axis=1)))
    np.testing.assert_allclose(wave, (left + right) / 2, atol=1e-3)  # 16-bit flac quantisation


def test_microphone_int16_mono():
    tone = sine(440, 2.0, sr=48000)
    wave = load_audio((48000, (tone * 32767).astype(np.int16)))
    assert_model_wave(wave)
    assert len(wave) == 2 * SAMPLE_RATE
    assert peak_frequency(wave) == pytest.approx(440, abs=2)
    assert np.abs(wave).max() == pytest.approx(0.5, abs=0.01)


def test_microphone_float32_stereo_channels_last():
    left, right = sine(440, 2.0, sr=44100, amplitude=0.8), sine(440, 2.0, sr=44100, amplitude=0.4)
    wave = load_audio((44100, np.stack([left, right], axis=1)))
    assert len(wave) == 2 * SAMPLE_RATE
    assert np.abs(wave).max() == pytest.approx(0.6, abs=0.01)


def test_channels_first_array_is_recognised():
    stereo = np.stack([sine(440, 2.0), sine(440, 2.0)])  # (2, N) as librosa lays it out
    np.testing.assert_allclose(load_audio((SAMPLE_RATE, stereo)), stereo[0], atol=1e-6)


@pytest.mark.parametrize("dtype,scale", [(np.int32, 2**31 - 1), (np.float64, 1.0), (np.int16, 32767)])
def test_integer_and_float_dtypes_are_scaled(dtype, scale):
    tone = sine(440, 1.5, amplitude=0.25)
    wave = load_audio((SAMPLE_RATE, (tone.astype(np.float64) * scale).astype(dtype)))
    np.testing.assert_allclose(wave, tone, atol=1e-4)


def test_loud_float_input_is_clipped():
    wave = load_audio((SAMPLE_RATE, 3.0 * sine(440, 1.5)))
    assert np.abs(wave).max() == 1.0


def test_max_seconds_caps_files_arrays_and_what_is_read(tmp_path, monkeypatch):
    path = write(tmp_path / "long.wav", music(30.0, sr=44100), sr=44100)
    requested = []
    real_read = sf.SoundFile.read

    def spy_read(self, frames=-1, *args, **kwargs):
        requested.append(frames)
        return real_read(self, frames, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", spy_read)
    assert len(load_audio(path, max_seconds=5)) == 5 * SAMPLE_RATE
    assert 0 < sum(requested) <= 5 * 44100 and -1 not in requested  # never "read everything"
    assert len(load_audio((SAMPLE_RATE, music(30.0)), max_seconds=5)) == 5 * SAMPLE_RATE
    assert len(load_audio(path)) == 30 * SAMPLE_RATE


def test_librosa_fallback_when_soundfile_cannot_read(tmp_path, monkeypatch):
    """Formats soundfile lacks (m4a, ...) go to librosa/audioread; simulate soundfile failing."""

    def soundfile_fails(*args, **kwargs):
        raise sf.SoundFileError("Format not recognised.")

    monkeypatch.setattr(audio, "_read_with_soundfile", soundfile_fails)
    tone = sine(440, 6.0, sr=44100)
    path = write(tmp_path / "tone.wav", np.stack([tone, tone], axis=1), sr=44100)
    wave = load_audio(path, max_seconds=4)
    assert len(wave) == 4 * SAMPLE_RATE
    assert peak_frequency(wave) == pytest.approx(440, abs=2)
    assert len(load_audio(path.read_bytes())) == 6 * SAMPLE_RATE


def test_file_cut_mid_stream_yields_what_was_decoded(tmp_path):
    data = write(tmp_path / "full.wav", sine(440, 4.0)).read_bytes()
    (tmp_path / "half.wav").write_bytes(data[: len(data) // 2])
    assert len(load_audio(tmp_path / "half.wav")) / SAMPLE_RATE == pytest.approx(2.0, abs=0.01)


# ------------------------------------------------------------------------------------------- bad input


def readable(error):
    """A message for a person: short, says what is wrong, no Python or libsndfile class names."""
    message = str(error.value)
    assert 10 < len(message) < 400
    assert "Error(" not in message and "Traceback" not in message and "LibsndfileError" not in message
    return message


def truncated(tmp_path, ext, keep_bytes):
    data = write(tmp_path / f"full.{ext}", music(3.0)).read_bytes()
    path = tmp_path / f"cut.{ext}"
    path.write_bytes(data[:keep_bytes])
    return path


def test_bad_files_raise_audio_error(tmp_path):
    from PIL import Image

    (tmp_path / "empty.wav").write_bytes(b"")
    sf.write(tmp_path / "zero.wav", np.zeros(0, np.float32), SAMPLE_RATE)
    (tmp_path / "text.mp3").write_text("These are my lyrics, not a song.\n" * 20)
    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "picture.png")
    (tmp_path / "picture.mp3").write_bytes((tmp_path / "picture.png").read_bytes())
    nan_wave = sine(440, 2.0)
    nan_wave[1000] = np.nan
    sf.write(tmp_path / "nan.wav", nan_wave, SAMPLE_RATE, subtype="FLOAT")
    cases = {
        tmp_path / "empty.wav": "empty",
        tmp_path / "zero.wav": "no samples",
        truncated(tmp_path, "wav", 44): "no samples",  # header only
        truncated(tmp_path, "wav", 20): "Could not read",  # cut inside the header
        truncated(tmp_path, "ogg", 300): "Could not read",
        truncated(tmp_path, "mp3", 300): "Could not read",
        truncated(tmp_path, "flac", 2000): "Could not read",
        tmp_path / "text.mp3": "Could not read 'text.mp3' as audio",
        tmp_path / "picture.mp3": "Could not read 'picture.mp3' as audio",
        tmp_path / "nan.wav": "NaN",
        tmp_path / "missing.mp3": "No such file",
        tmp_path: "folder",
    }
    for path, expected in cases.items():
        with pytest.raises(AudioError) as error:
            load_audio(path)
        assert expected in readable(error), (path, str(error.value))


def test_mp3_junk_is_not_reported_as_a_missing_file(tmp_path):
    (tmp_path / "junk.mp3").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(AudioError) as error:
        load_audio(tmp_path / "junk.mp3")
    assert "does not exist" not in readable(error)


@pytest.mark.parametrize(
    "source,expected",
    [
        (None, "No audio"),
        (b"", "empty"),
        (b"RIFF\x00\x00not really a wave file at all" * 3, "Could not read the uploaded data"),
        ((SAMPLE_RATE, np.array([0.1, np.nan, 0.2] * 30000, np.float32)), "NaN"),
        ((SAMPLE_RATE, np.array([0.1, np.inf] * 30000)), "NaN or infinity"),
        ((SAMPLE_RATE, np.zeros(0, np.int16)), "no samples"),
        ((0, np.zeros(1000, np.int16)), "sample rate"),
        (("fast", np.zeros(1000, np.int16)), "sample rate"),
        ((SAMPLE_RATE, np.zeros((2, 3, 4000), np.float32)), "shape"),
        ((SAMPLE_RATE, np.zeros(4000, np.complex64)), "integers or floats"),
        ((SAMPLE_RATE,), "pair"),
    ],
)
def test_bad_bytes_and_arrays_raise_audio_error(source, expected):
    with pytest.raises(AudioError) as error:
        load_audio(source)
    assert expected in readable(error)


def test_unsupported_source_type_is_a_type_error():
    with pytest.raises(TypeError):
        load_audio(12345)


@pytest.mark.parametrize(
    "wave,expected",
    [
        (np.zeros(5 * SAMPLE_RATE, np.float32), "silent"),
        (np.full(5 * SAMPLE_RATE, 0.3, np.float32), "silent"),  # DC offset only
        (np.full(5 * SAMPLE_RATE, -0.2, np.float32) + sine(440, 5.0, amplitude=2e-5), "silent"),
        (sine(440, 0.2), "too short (0.20 s)"),
        (np.where(np.arange(2 * SAMPLE_RATE) == 7, np.nan, sine(440, 2.0)).astype(np.float32), "NaN"),
    ],
)
def test_unusable_waves_raise_audio_error_in_clip_windows(wave, expected):
    with pytest.raises(AudioError) as error:
        clip_windows(wave)
    assert expected in readable(error)


def test_silent_and_short_files_pass_loading_but_not_windowing(tmp_path):
    silent = load_audio(write(tmp_path / "silence.wav", np.zeros(3 * SAMPLE_RATE, np.float32)))
    short = load_audio(write(tmp_path / "short.mp3", sine(440, 0.2)))
    for wave in (silent, short):
        with pytest.raises(AudioError):
            clip_windows(wave)


# ---------------------------------------------------------------------------------------------- windows


def test_constants_fit_together():
    assert SEGMENT_SAMPLES * N_SEGMENTS == CLIP_SAMPLES == 196464
    assert 1 + SEGMENT_SAMPLES // HOP_LENGTH == SEGMENT_FRAMES == 256
    assert CLIP_SECONDS == pytest.approx(8.91, abs=0.001)


def test_non_overlapping_windows_by_default():
    wave = music(30.0)
    windows = clip_windows(wave)
    assert windows.samples.shape == (3, CLIP_SAMPLES) and windows.samples.dtype == np.float32
    assert windows.starts_seconds == pytest.approx([0.0, CLIP_SECONDS, 2 * CLIP_SECONDS], abs=1e-4)
    assert windows.duration_seconds == pytest.approx(30.0) and not windows.looped
    np.testing.assert_array_equal(windows.samples[1], wave[CLIP_SAMPLES: 2 * CLIP_SAMPLES])


def test_hop_sets_the_window_starts():
    wave = music(20.0)
    windows = clip_windows(wave, hop_seconds=2.0)
    expected_count = (len(wave) - CLIP_SAMPLES) // (2 * SAMPLE_RATE) + 1
    assert len(windows.starts_seconds) == windows.samples.shape[0] == expected_count == 6
    assert np.diff(windows.starts_seconds) == pytest.approx(2.0)
    start = int(windows.starts_seconds[-1] * SAMPLE_RATE)
    np.testing.assert_array_equal(windows.samples[-1], wave[start:start + CLIP_SAMPLES])


def test_max_windows_are_spread_over_the_whole_piece():
    wave = music(60.0)
    every = clip_windows(wave, hop_seconds=1.0)
    picked = clip_windows(wave, hop_seconds=1.0, max_windows=4)
    assert picked.samples.shape == (4, CLIP_SAMPLES)
    assert picked.starts_seconds[0] == 0.0 and picked.starts_seconds[-1] == every.starts_seconds[-1]
    assert np.all(np.diff(picked.starts_seconds) > 10)
    assert clip_windows(wave, max_windows=100).samples.shape[0] == 6  # fewer exist than allowed


def test_short_input_is_loop_padded():
    wave = music(3.0)
    windows = clip_windows(wave)
    assert windows.looped and windows.samples.shape == (1, CLIP_SAMPLES)
    assert windows.starts_seconds == [0.0] and windows.duration_seconds == pytest.approx(3.0)
    np.testing.assert_array_equal(windows.samples[0, : len(wave)], wave)
    np.testing.assert_array_equal(windows.samples[0, len(wave): 2 * len(wave)], wave)
    exact = clip_windows(music(CLIP_SECONDS + 1e-6))
    assert not exact.looped and exact.samples.shape == (1, CLIP_SAMPLES)


def test_bad_window_arguments():
    with pytest.raises(ValueError):
        clip_windows(music(10.0), hop_seconds=0)
    with pytest.raises(ValueError):
        clip_windows(music(10.0), max_windows=0)
    with pytest.raises(ValueError):
        clip_windows(np.zeros((2, CLIP_SAMPLES), np.float32))


# --------------------------------------------------------------------------------------------- features


def test_feature_shape_dtype_and_inputs():
    clips = np.stack([music(CLIP_SECONDS + 0.01, seed=s)[:CLIP_SAMPLES] for s in range(3)])
    features = log_mel_features(clips)
    assert features.shape == (3, N_SEGMENTS, N_MELS, SEGMENT_FRAMES)
    assert features.dtype == torch.float32 and features.device.type == "cpu"
    assert torch.isfinite(features).all()
    torch.testing.assert_close(log_mel_features(torch.from_numpy(clips), batch_size=2), features)
    torch.testing.assert_close(log_mel_features(clips[1]), features[1:2])
    assert log_mel_features(np.zeros((0, CLIP_SAMPLES), np.float32)).shape == (0, 3, 128, 256)
    with pytest.raises(ValueError):
        log_mel_features(np.zeros((2, 1000), np.float32))


def librosa_log_mel(segment):
    import librosa

    power = librosa.feature.melspectrogram(
        y=segment, sr=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP_LENGTH, n_mels=N_MELS,
        window="hann", center=True, pad_mode="constant",
    )
    return librosa.power_to_db(power, ref=1.0, top_db=80)


def test_features_match_librosa():
    """Per segment, within LIBROSA_TOLERANCE_DB; segments differ in loudness, so top_db is per segment."""
    rng = np.random.default_rng(1)
    chords = music(CLIP_SECONDS + 0.01)[:CLIP_SAMPLES]
    chords[SEGMENT_SAMPLES: 2 * SEGMENT_SAMPLES] *= 0.01  # a quiet middle segment
    noise = (0.1 * rng.standard_normal(CLIP_SAMPLES)).astype(np.float32)
    tone = sine(440, CLIP_SECONDS + 0.01)[:CLIP_SAMPLES]
    clips = np.stack([chords, noise, tone])
    features = log_mel_features(clips).numpy()
    for clip, clip_features in zip(clips, features, strict=True):
        for index in range(N_SEGMENTS):
            expected = librosa_log_mel(clip[index * SEGMENT_SAMPLES: (index + 1) * SEGMENT_SAMPLES])
            assert expected.shape == (N_MELS, SEGMENT_FRAMES)
            assert np.abs(clip_features[index] - expected).max() < LIBROSA_TOLERANCE_DB
    quiet, loud = features[0, 1], features[0, 0]
    assert quiet.max() < loud.max() - 30  # each segment keeps its own level...
    for segment in features.reshape(-1, N_MELS, SEGMENT_FRAMES):
        assert segment.min() >= segment.max() - 80 - 1e-3  # ...and its own 80 dB floor


def test_log_mel_module_holds_no_weights():
    module = LogMel()
    assert module.state_dict() == {}
    assert module.mel_basis.shape == (N_MELS, N_FFT // 2 + 1)
    with pytest.raises(ValueError):
        module(torch.zeros(2, SEGMENT_SAMPLES))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_features_on_cuda_match_cpu():
    clips = np.stack([music(CLIP_SECONDS + 0.01, seed=s)[:CLIP_SAMPLES] for s in range(2)])
    torch.testing.assert_close(
        log_mel_features(clips, device="cuda"), log_mel_features(clips, device="cpu"), atol=0.01, rtol=0
    )


# ------------------------------------------------------------------------------------------- statistics


def test_statistics_and_standardize():
    clips = np.stack([music(CLIP_SECONDS + 0.01, seed=s)[:CLIP_SAMPLES] for s in range(4)])
    features = log_mel_features(clips)
    mean, std = feature_statistics(features)
    assert mean.shape == std.shape == (N_MELS,) and mean.dtype == std.dtype == np.float32
    np.testing.assert_allclose(mean, features.double().mean(dim=(0, 1, 3)).numpy(), rtol=1e-5)
    np.testing.assert_allclose(
        std, features.double().std(dim=(0, 1, 3), correction=0).clamp_min(1e-3).numpy(), rtol=1e-4
    )
    mean_np, std_np = feature_statistics(features.numpy())
    np.testing.assert_array_equal(mean_np, mean)
    standardized = standardize(features, mean, std)
    assert standardized.shape == features.shape and standardized.dtype == torch.float32
    per_bin_mean = standardized.mean(dim=(0, 1, 3))
    per_bin_std = standardized.std(dim=(0, 1, 3), correction=0)
    assert per_bin_mean.abs().max() < 1e-3
    assert (per_bin_std - 1).abs().max() < 1e-3


def test_constant_mel_bin_does_not_divide_by_zero():
    features = torch.randn(2, N_SEGMENTS, N_MELS, SEGMENT_FRAMES)
    features[:, :, 5] = -100.0  # a bin that is always at the floor
    mean, std = feature_statistics(features)
    assert std[5] == pytest.approx(1e-3)
    standardized = standardize(features, mean, std)
    assert torch.isfinite(standardized).all() and standardized[:, :, 5].abs().max() < 1e-2
    with pytest.raises(ValueError):
        standardize(features, mean[:64], std[:64])
    with pytest.raises(ValueError):
        feature_statistics(torch.zeros(0, N_SEGMENTS, N_MELS, SEGMENT_FRAMES))


def test_bytes_io_roundtrip_of_generated_flac():
    """A file held in memory (as a web upload arrives) decodes the same as from disk."""
    buffer = io.BytesIO()
    sf.write(buffer, music(2.0), SAMPLE_RATE, format="FLAC")
    wave = load_audio(buffer.getvalue())
    np.testing.assert_allclose(wave, music(2.0), atol=1e-3)
