"""Stage `embed`: the frozen speech embedding of every clip, computed once, for models that train on it.

The embedding is frozen, so it is the same in every epoch and every `dvc exp run` of the head: caching it here is
what makes a change of ``train.lr`` cost seconds. Training clips also get ``embed.copies`` augmented copies each,
made on the waveform before embedding (the embedding cannot be augmented after it): a speed warp (pitch and formants,
as another vocal tract), room reverberation, background noise, a band limit (telephone, 8 kHz recordings) and a level
change, the channels real recordings come through. Each copy draws from ``(embed.seed, clip, copy)``, so the output
is the same on every run.

For a model that takes only waveforms (``m5``, ``dscnn``, ``bcresnet``) there is nothing to embed: the stage writes only
``info.json`` saying so, and costs nothing.
"""

from __future__ import annotations

import functools
import multiprocessing
import sys

import numpy as np
import torch
import torchaudio
from tqdm import tqdm

from stages import embedding, params
from stages.audio import locate
from stages.cli import UserError, run
from stages.fileio import atomic_dir, ensure_space, write_json, write_torch
from stages.params import EmbedParams, ModelParams
from stages.paths import EMBEDDED, PROCESSED, split_file
from stages.processed import load_split
from stages.runtime import worker_count
from stages.splits import SPLIT_NAMES

RATE_STEP = 100  # speed warps are quantised to 100 Hz steps of the source rate, so resampling kernels are reused
BAND_STEP = 500  # band limits are quantised to 500 Hz steps of the narrow rate, for the same reason
SPEECH_PEAK_DBFS = (-30.0, -1.0)
EMBEDDED_MODELS = ("embedding", "ensemble")  # the models with a head on the embedding (the ensemble's first member)
CHUNK = 64  # clips per worker task: small enough to stay in cache, large enough to amortise a task's overhead


@functools.lru_cache(maxsize=128)
def warp_resampler(source_rate: int, sample_rate: int) -> torchaudio.transforms.Resample:
    return torchaudio.transforms.Resample(source_rate, sample_rate)


def room_response(rng: np.random.Generator, sample_rate: int, rt60_max: float) -> torch.Tensor:
    """A noise-like room impulse response: a direct path, then exponentially decaying diffuse reflections."""
    rt60 = rng.uniform(0.1, rt60_max)
    length = int(rt60 * sample_rate)
    decay = np.exp(-6.9 * np.arange(length) / (rt60 * sample_rate))  # -60 dB at rt60
    response = rng.standard_normal(length) * decay
    response[0] = 1 / rng.uniform(0.2, 1.0)  # direct-to-reverberant ratio
    return torch.from_numpy(response / np.sqrt((response**2).sum())).float()


def convolve(waveform: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
    """Linear convolution by FFT, keeping the tail: ``[1, n]`` and ``[m]`` to ``[1, n + m - 1]``."""
    size = waveform.shape[-1] + response.numel() - 1
    return torch.fft.irfft(torch.fft.rfft(waveform, size) * torch.fft.rfft(response, size), size)


def band_limit(waveform: torch.Tensor, sample_rate: int, cutoff_hz: float) -> torch.Tensor:
    """``waveform`` without its content above about ``cutoff_hz``, as a telephone or an 8 kHz recording has it:
    resampled down to twice the cutoff and back, through torchaudio's band-limited sinc kernels.
    """
    narrow = round(2 * cutoff_hz / BAND_STEP) * BAND_STEP
    restored = warp_resampler(narrow, sample_rate)(warp_resampler(sample_rate, narrow)(waveform))
    samples = waveform.shape[-1]
    return torch.nn.functional.pad(restored[..., :samples], (0, max(0, samples - restored.shape[-1])))


def channel_copy(
    waveform: torch.Tensor, sample_rate: int, config: EmbedParams, rng: np.random.Generator
) -> torch.Tensor:
    """One augmented copy of a ``[1, samples]`` clip: warp, room, re-centred window, noise, band limit, level."""
    samples = waveform.shape[-1]
    if config.speed > 0:
        warp = rng.uniform(1 - config.speed, 1 + config.speed)
        source_rate = round(sample_rate * warp / RATE_STEP) * RATE_STEP
        waveform = warp_resampler(source_rate, sample_rate)(waveform)
    if rng.random() < config.reverb_prob:
        waveform = convolve(waveform, room_response(rng, sample_rate, config.rt60_max))
    waveform = locate(waveform, samples, sample_rate)
    if rng.random() < config.noise_prob:
        noise = torch.from_numpy(rng.standard_normal(samples)).float()
        if rng.random() < 0.5:  # brown noise (hum, traffic, wind) instead of white (hiss)
            noise = noise.cumsum(0)
            noise = noise - noise.mean()
        snr_db = rng.uniform(config.snr_db_min, config.snr_db_max)
        noise *= waveform.square().mean().sqrt() / (noise.square().mean().sqrt() * 10 ** (snr_db / 20) + 1e-12)
        waveform = waveform + noise
    # drawn only when on, so that band_limit_prob 0 leaves every other draw, and so every copy, as it was
    if config.band_limit_prob > 0 and rng.random() < config.band_limit_prob:
        waveform = band_limit(waveform, sample_rate, rng.uniform(config.band_limit_hz_min, config.band_limit_hz_max))
    peak = 10 ** (rng.uniform(*SPEECH_PEAK_DBFS) / 20)
    return waveform * peak / waveform.abs().max().clamp_min(1e-8)


def embed_chunk(task: tuple[int, int, int, EmbedParams]) -> np.ndarray:
    """Embeddings ``[(copies + 1) * clips, windows, 96]`` of clips ``start:stop`` of the split the pool was made for,
    and of ``copies`` augmented copies of each, copy-major; each copy drawn from ``(embed.seed, clip, copy)``.
    """
    start, stop, copies, config = task
    waveforms, sample_rate = _SPLIT["waveforms"], _SPLIT["sample_rate"]
    clips = [waveforms[start:stop]]
    for copy in range(copies):
        made = []
        for index in range(start, stop):
            rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(index, copy)))
            made.append(channel_copy(waveforms[index], sample_rate, config, rng))
        clips.append(torch.stack(made))
    return embedding.embed_batch(torch.cat(clips).flatten(1).numpy())


def one_thread() -> None:
    torch.set_num_threads(1)  # the pool's workers already use every core


# The split a pool's workers read: set before the pool forks them, so each worker maps the same file instead of
# receiving clips through a pipe.
_SPLIT: dict = {}


def embed_all(
    waveforms: torch.Tensor, sample_rate: int, copies: int, config: EmbedParams, progress: str
) -> torch.Tensor:
    """Embeddings of every clip and, after them, of ``copies`` augmented copies of each (copy-major), made by a pool
    of one-thread workers over chunks of ``CHUNK`` clips: the work uses every core, and the numbers are the same
    whatever the number of cores, since every chunk is computed alike on one thread.
    """
    clips = len(waveforms)
    chunks = [(start, min(start + CHUNK, clips), copies, config) for start in range(0, clips, CHUNK)]
    out = torch.empty(clips * (copies + 1), embedding.windows(waveforms.shape[-1]), embedding.EMBEDDING_SIZE)
    _SPLIT.update(waveforms=waveforms, sample_rate=sample_rate)
    try:
        with multiprocessing.get_context("fork").Pool(worker_count(), initializer=one_thread) as pool:
            done = pool.imap(embed_chunk, chunks)
            for (start, stop, _, _), vectors in zip(
                chunks, tqdm(done, total=len(chunks), desc=progress, unit="chunk", leave=False), strict=True
            ):
                parts = torch.from_numpy(vectors).view(copies + 1, stop - start, *out.shape[1:])
                for copy, part in enumerate(parts):
                    out[copy * clips + start : copy * clips + stop] = part
    finally:
        _SPLIT.clear()
    return out


def embed_split(split: str, config: EmbedParams) -> dict:
    """One split's embeddings (training clips with their augmented copies after them) and labels."""
    data = load_split(split_file(split))
    waveforms, labels = data["waveforms"], data["labels"]
    if data["sample_rate"] != embedding.SAMPLE_RATE:
        raise UserError(
            f"the speech embedding (models embedding and ensemble) needs 16 kHz clips, but {PROCESSED} holds "
            f"{data['sample_rate']} Hz: set preprocess.sample_rate to {embedding.SAMPLE_RATE}"
        )
    copies = config.copies if split == "train" else 0
    vectors = embed_all(waveforms, data["sample_rate"], copies, config, f"embedding {split}")
    return {
        "embeddings": vectors,
        "labels": labels.repeat(copies + 1),
        "label_names": data["label_names"],
        "sample_rate": data["sample_rate"],
        "samples": waveforms.shape[-1],
        "clips": len(data["labels"]),
    }


def embedded_bytes(split: str, config: EmbedParams) -> int:
    """The bytes of one split's embeddings, float32 ``[rows, windows, 96]``, known before any is computed."""
    data = load_split(split_file(split))
    if data["sample_rate"] != embedding.SAMPLE_RATE:
        return 0  # embed_split refuses it, saying why
    rows = len(data["labels"]) * (1 + config.copies if split == "train" else 1)
    return rows * embedding.windows(data["waveforms"].shape[-1]) * embedding.EMBEDDING_SIZE * 4


def main() -> None:
    config = params.load(EmbedParams)
    model = params.load(ModelParams).name
    with atomic_dir(EMBEDDED) as out:
        if model not in EMBEDDED_MODELS:
            write_json(out / "info.json", {"model": model, "embedded": False})
            print(f"{EMBEDDED}: nothing to embed for model '{model}', which takes waveforms", file=sys.stderr)
            return
        # refused now, not after embedding for hours until the disk is full
        ensure_space(out, sum(embedded_bytes(split, config) for split in SPLIT_NAMES))
        counts = {}
        for split in SPLIT_NAMES:
            result = embed_split(split, config)
            write_torch(split_file(split, out), result)
            counts[split] = {"clips": result["clips"], "embedded": len(result["labels"])}
        windows = result["embeddings"].shape[1]
        write_json(out / "info.json", {"model": model, "embedded": True, "windows_per_clip": windows, "splits": counts})
    summary = ", ".join(f"{split} {count['embedded']}" for split, count in counts.items())
    print(f"{EMBEDDED}: {summary} embedded clips ({config.copies} copies of each training clip)", file=sys.stderr)


if __name__ == "__main__":
    run(main)
