"""The embedded split files of ``data/embedded``: the frozen speech embedding of every clip and of the training
clips' augmented copies, made by a pool of one-thread workers so the numbers are the same on any core count.
"""

from __future__ import annotations

import multiprocessing

import numpy as np
import torch
from tqdm import tqdm

from spokenwords.audio.copies import channel_copy
from spokenwords.cli import UserError
from spokenwords.data.processed_splits import load_split
from spokenwords.models import embedding
from spokenwords.params import EmbedParams
from spokenwords.paths import PROCESSED, split_file
from spokenwords.runtime import worker_count

EMBEDDED_MODELS = ("embedding", "ensemble")  # the models with a head on the embedding (the ensemble's first member)
CHUNK = 64  # clips per worker task: small enough to stay in cache, large enough to amortise a task's overhead


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
