"""Audio shaping in numpy alone: decode, resample, find the word and shift, with no torch import.

The ONNX predictor (``spokenwords/predict_onnx.py``) runs where torch is not installed, yet must prepare a file exactly
as ``preprocess`` and ``predict`` do. So decoding lives here and ``spokenwords/audio/torch_shaping.py`` wraps it, and
``resample``, ``locate`` and ``move`` are numpy twins of torchaudio's ``Resample``, ``torch_shaping.locate`` and
``scoring.move``;
``tests/audio/test_clips.py`` holds each pair to the same output.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

import numpy as np
import soundfile


class BadAudio(Exception):
    """A file that cannot become a clip; ``str(error)`` is the reason, counted in the preprocess report."""


class NoSpeech(BadAudio):
    """A readable recording with nothing loud enough to be a word in it."""


MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 384_000
# torchaudio's polyphase kernel has (target / gcd) x (source / gcd) taps: an odd rate such as 44101 Hz
# would need gigabytes. Source rates are therefore rounded to a multiple of 25 Hz (every common rate is one),
# which shifts pitch by under 0.13 % above 10 kHz and bounds the kernel (at most 20 MB for an 8 kHz target).
RATE_STEP = 25
MAX_CHANNELS = 64
BLOCK_FRAMES = 65_536
# The word is looked for in at most this much of a recording: memory stays bounded by it, not by the file.
MAX_SECONDS = 60.0
FRAME_SECONDS = 0.01
# A recording whose loudest 10 ms frame has an RMS below this (-60 dBFS) holds no speech: it is silence or hum.
SPEECH_RMS = 1e-3
# torchaudio's default resampling filter: sinc_interp_hann, 6 zero crossings, roll-off at 99 % of Nyquist
LOWPASS_WIDTH = 6
ROLLOFF = 0.99
RESAMPLE_BLOCK = 4096  # output frames resampled at a time: a few MB of input frames even for 384 kHz


def read_samples(path: Path, max_seconds: float) -> tuple[np.ndarray, int]:
    """Decode at most ``max_seconds`` of ``path``, mixed down to float32 mono ``[frames]``, and its sample rate.

    Reading only what is kept, block by block, bounds memory by the clip: an hour-long file or a header
    that claims millions of channels costs no more than a one-second clip.
    """
    if not path.is_file():
        raise BadAudio("no such file")
    try:
        # the name as bytes: soundfile encodes a str name strictly, so a name that is not UTF-8 could not be opened
        with soundfile.SoundFile(os.fsencode(path)) as audio:
            rate, channels = audio.samplerate, audio.channels
            if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
                raise BadAudio(f"unsupported sample rate {rate} Hz (not {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE})")
            if not 0 < channels <= MAX_CHANNELS:
                raise BadAudio(f"unsupported channel count {channels}")
            frames = min(audio.frames, math.ceil(max_seconds * rate))
            blocks = audio.blocks(BLOCK_FRAMES, frames=frames, dtype="float32", always_2d=True)
            mono = [block.mean(axis=1) for block in blocks]
    except soundfile.LibsndfileError as error:  # libsndfile's own reason, without the file name the caller shows
        raise BadAudio(f"not readable audio ({error.error_string})") from None
    except (RuntimeError, ValueError, EOFError) as error:
        raise BadAudio(f"not readable audio ({error})") from None
    except OSError as error:
        raise BadAudio(f"cannot read file ({error.strerror or error})") from None
    samples = np.concatenate(mono) if mono else np.zeros(0, dtype=np.float32)
    if samples.size == 0:
        raise BadAudio("zero-length audio")
    if not np.isfinite(samples).all():
        raise BadAudio("NaN or infinite samples")
    return samples, rate


def source_rate(rate: int) -> int:
    """The rate a file is resampled from: its own, rounded to ``RATE_STEP`` (see there)."""
    return round(rate / RATE_STEP) * RATE_STEP


@functools.lru_cache(maxsize=4)
def resample_kernel(orig_rate: int, new_rate: int) -> tuple[np.ndarray, int, int, int]:
    """torchaudio's polyphase sinc kernel ``[new, 2 * width + orig]`` (float32, read-only: built once per rate pair
    and shared) and the reduced rates and width.

    Computed as ``torchaudio.functional._get_sinc_resample_kernel`` does, step for step and dtype for dtype, so the
    filter taps are the same floats.
    """
    gcd = math.gcd(orig_rate, new_rate)
    orig, new = orig_rate // gcd, new_rate // gcd
    base = min(orig, new) * ROLLOFF
    width = math.ceil(LOWPASS_WIDTH * orig / base)
    index = np.arange(-width, width + orig, dtype=np.float64)[None] / orig
    times = (np.arange(0, -new, -1, dtype=np.float32)[:, None] / np.float32(new)).astype(np.float64) + index
    times = np.clip(times * base, -LOWPASS_WIDTH, LOWPASS_WIDTH)
    window = np.cos(times * math.pi / LOWPASS_WIDTH / 2) ** 2
    times *= math.pi
    with np.errstate(invalid="ignore", divide="ignore"):
        kernel = np.where(times == 0, 1.0, np.sin(times) / times)
    kernel = (kernel * (window * (base / orig))).astype(np.float32)
    kernel.setflags(write=False)
    return kernel, orig, new, width


def resample(samples: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """``samples`` ``[frames]`` at ``orig_rate`` resampled to ``new_rate``, as ``torchaudio.transforms.Resample``."""
    if orig_rate == new_rate:
        return samples
    kernel, orig, new, width = resample_kernel(orig_rate, new_rate)
    padded = np.pad(samples.astype(np.float32), (width, width + orig))
    frames = np.lib.stride_tricks.sliding_window_view(padded, kernel.shape[1])[::orig]
    # A contiguous copy of a block of the overlapping frames lets NumPy hand the product to BLAS, many times faster
    # than its own loop over a view for a kernel of hundreds of taps (44.1 to 16 kHz); a block bounds the copy.
    starts = range(0, len(frames), RESAMPLE_BLOCK)
    out = np.concatenate([np.ascontiguousarray(frames[at : at + RESAMPLE_BLOCK]) @ kernel.T for at in starts])
    out = out.reshape(-1)
    return out[: math.ceil(new * samples.size / orig)]


def locate(samples: np.ndarray, length: int, sample_rate: int) -> np.ndarray:
    """The ``length``-sample window of ``[frames]`` centred on the spoken word: ``torch_shaping.locate`` in numpy (see
    its docstring for the rule).
    """
    frame = max(1, round(FRAME_SECONDS * sample_rate))
    count = math.ceil(samples.size / frame)
    energy = np.square(np.pad(samples.astype(np.float64), (0, count * frame - samples.size)).reshape(count, frame))
    energy = energy.mean(axis=1)
    if math.sqrt(energy.max()) < SPEECH_RMS:
        raise NoSpeech("no speech found (every 10 ms frame is below -60 dBFS)")
    if samples.size <= length:
        before = (length - samples.size) // 2
        return np.pad(samples, (before, length - samples.size - before))
    span = max(1, min(count, length // frame))
    running = np.concatenate([[0.0], energy.cumsum()])
    start = int((running[span:] - running[:-span]).argmax())
    weights = energy[start : start + span]
    centre = (start + (weights * np.arange(span)).sum() / weights.sum() + 0.5) * frame
    first = round(float(centre)) - length // 2
    padded = np.pad(samples, (max(0, -first), max(0, first + length - samples.size)))
    offset = max(0, first)
    return padded[offset : offset + length]


def prepare(path: Path, sample_rate: int, clip_seconds: float) -> np.ndarray:
    """``torch_shaping.prepare`` in numpy: decode, mix to mono, resample and cut ``[sample_rate * clip_seconds]``
    float32 samples centred on the word.
    """
    samples, rate = read_samples(path, max(MAX_SECONDS, clip_seconds))
    samples = resample(samples, source_rate(rate), sample_rate)
    return locate(samples, round(sample_rate * clip_seconds), sample_rate)


def move(clips: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``scoring.move`` in numpy: each ``[clips, samples]`` row ``offsets[i]`` samples later (earlier when negative),
    silence where it uncovers the window.
    """
    samples = clips.shape[-1]
    source = np.arange(samples) - np.asarray(offsets)[:, None]
    inside = (source >= 0) & (source < samples)
    return np.take_along_axis(clips, source.clip(0, samples - 1), axis=1) * inside


def shift_step(milliseconds: float, sample_rate: int) -> int:
    """``evaluate.shift_step_ms`` in samples, at least one."""
    return max(1, round(milliseconds * sample_rate / 1000))


def shifted_copies(clip: np.ndarray, shifts: int, step: int) -> np.ndarray:
    """``[2 * shifts + 1, samples]`` copies of one clip moved by -shifts … shifts times ``step`` samples, the copies
    ``scoring.shifted_probabilities`` scores (the centre one is the clip itself).
    """
    offsets = np.arange(-shifts, shifts + 1) * step
    return move(np.repeat(clip[None], len(offsets), axis=0), offsets)
