"""The synthetic digits: real espeak-ng output, reproducible to the byte, in the raw dataset layout."""

from __future__ import annotations

import multiprocessing
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from spokenwords.cli import UserError
from spokenwords.data import synthesis

N_CLIPS = 50
NAME = re.compile(r"^(?P<label>[a-z]+)/(?P<speaker>[^_/]+)_nohash_(?P<n>\d+)\.wav$")


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path, with its bytes."""
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in root.rglob("*") if path.is_file()}


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "raw"
    synthesis.generate(out, N_CLIPS, seed=0)
    return out


def test_same_seed_gives_identical_bytes_whatever_the_worker_count(
    clips: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 1)  # one worker renders every speaker, one after another
    synthesis.generate(tmp_path / "again", N_CLIPS, seed=0)
    assert tree(tmp_path / "again") == tree(clips)


def test_another_seed_gives_other_bytes(clips: Path, tmp_path: Path) -> None:
    synthesis.generate(tmp_path / "other", N_CLIPS, seed=1)
    original, other = tree(clips), tree(tmp_path / "other")
    assert len(other) == N_CLIPS
    assert not set(original.values()) & set(other.values())


def test_files_are_short_16_khz_mono_pcm16_in_the_raw_layout(clips: Path) -> None:
    names = [path.relative_to(clips).as_posix() for path in clips.rglob("*.wav")]
    assert len(names) == N_CLIPS
    matches = [NAME.match(name) for name in names]
    assert all(matches), names
    assert {match["label"] for match in matches} == set(synthesis.DIGITS)
    assert len({match["speaker"] for match in matches}) > 10
    for name in names:
        info = soundfile.info(clips / name)
        assert (info.samplerate, info.channels, info.subtype, info.format) == (16000, 1, "PCM_16", "WAV")
        assert 1 <= info.frames <= 16000


def test_every_file_holds_one_unique_clip_per_label_speaker_and_repetition() -> None:
    plan = synthesis.plan(3 * len(synthesis.SPEAKERS) * len(synthesis.DIGITS), seed=0)
    assert len({clip.relpath() for clip in plan}) == len(plan)
    per_pair = {(clip.label, clip.speaker) for clip in plan[: len(synthesis.SPEAKERS) * len(synthesis.DIGITS)]}
    assert len(per_pair) == len(synthesis.SPEAKERS) * len(synthesis.DIGITS)  # every speaker says every digit once
    assert len({clip.speaker for clip in plan[: len(synthesis.SPEAKERS)]}) == len(synthesis.SPEAKERS)


def test_clips_are_speech_well_above_the_noise_floor(clips: Path) -> None:
    for path in clips.rglob("*.wav"):
        wave, _ = soundfile.read(path, dtype="float64")
        frames = wave[: wave.size // 160 * 160].reshape(-1, 160)  # 10 ms frames
        energy = np.sqrt(np.mean(frames**2, axis=1))
        loud, quiet = np.percentile(energy, 95), np.percentile(energy, 5)
        assert loud > 0.005, path  # above -46 dBFS: not silence
        assert loud > 5 * quiet, path  # the word stands at least 14 dB above the noise floor


def in_fresh_process(function: Callable[..., Any], *args: Any) -> Any:
    """Run espeak in a child: loaded here, its state would leak into the workers that ``generate`` forks."""
    with multiprocessing.Pool(1) as pool:
        return pool.apply(function, args)


def say_seven(speakers: tuple[str, ...]) -> tuple[int, list[np.ndarray]]:
    """espeak's sample rate, and "seven" said by each speaker with the same settings."""
    espeak = synthesis.Espeak()
    waves = [espeak.say(speaker, "seven", rate=175, pitch=50, pitch_range=50, rand_seed=0) for speaker in speakers]
    return espeak.sample_rate, waves


def pitch_hz(wave: np.ndarray, rate: int) -> float:
    """The pitch of the loudest 0.1 s, by autocorrelation between 60 and 400 Hz."""
    wave = wave.astype(np.float64)
    centre = int(np.argmax(np.convolve(wave**2, np.ones(rate // 10), mode="same")))
    window = wave[max(0, centre - rate // 20) : centre + rate // 20]
    correlation = np.correlate(window, window, mode="full")[window.size - 1 :]
    low, high = rate // 400, rate // 60
    return rate / (low + int(np.argmax(correlation[low:high])))


def test_voices_and_variants_change_the_speaker() -> None:
    rate, (male, female, scottish) = in_fresh_process(say_seven, ("en-us.m1", "en-us.f1", "en-gb-scotland.m1"))
    assert min(male.size, female.size, scottish.size) > 0.3 * rate
    assert male.size != scottish.size or not np.array_equal(male, scottish)  # the accent changes the sound
    assert pitch_hz(female, rate) > 1.4 * pitch_hz(male, rate)  # and the variant the voice


def test_a_missing_voice_is_a_user_error() -> None:
    with pytest.raises(UserError, match="voice 'xx-nowhere'"):
        in_fresh_process(say_seven, ("xx-nowhere.m1",))


def test_a_missing_voice_variant_is_a_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(synthesis, "SPEAKERS", ("en-us.nosuchvariant",))
    with pytest.raises(UserError, match="nosuchvariant"):
        synthesis.generate(tmp_path / "raw", 10, seed=0)


# The neural voices: how many clips each test renders (Kokoro loads its 92 MB graph once per speaker process).
NEURAL_CLIPS = {"piper": 24, "kokoro": 4}
NEURAL_SPEAKERS = {"piper": synthesis.PIPER_SPEAKERS, "kokoro": synthesis.KOKORO_SPEAKERS}


def generate_neural(engine: str, out: Path, seed: int) -> None:
    synthesis.generate(out, 0, seed=seed, **{f"{engine}_clips": NEURAL_CLIPS[engine]})


@pytest.fixture(scope="module", params=list(NEURAL_CLIPS))
def neural_clips(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    out = tmp_path_factory.mktemp(request.param) / "raw"
    generate_neural(request.param, out, seed=0)
    return request.param, out


def test_neural_clips_repeat_to_the_byte_and_differ_by_seed(neural_clips: tuple[str, Path], tmp_path: Path) -> None:
    engine, clips = neural_clips
    generate_neural(engine, tmp_path / "again", seed=0)
    assert tree(tmp_path / "again") == tree(clips)
    generate_neural(engine, tmp_path / "other", seed=1)
    assert not set(tree(clips).values()) & set(tree(tmp_path / "other").values())


def test_neural_voice_clips_are_its_speakers_in_the_raw_layout(neural_clips: tuple[str, Path]) -> None:
    """Every (label, speaker) pair comes once before any comes again, so the first clips have distinct speakers."""
    engine, clips = neural_clips
    matches = [NAME.match(path.relative_to(clips).as_posix()) for path in clips.rglob("*.wav")]
    count, speakers = NEURAL_CLIPS[engine], NEURAL_SPEAKERS[engine]
    assert len(matches) == count and all(matches)
    assert {match["speaker"] for match in matches} <= set(speakers)
    assert len({match["speaker"] for match in matches}) == min(count, len(speakers))
    assert len({match["label"] for match in matches}) == min(count, len(synthesis.DIGITS))
    for match in matches:
        audio, rate = soundfile.read(clips / match.string)
        assert rate == 16000 and len(audio) == 16000 and np.abs(audio).max() > 0.05


def test_kokoro_speakers_blend_the_styles_differently() -> None:
    styles = np.random.default_rng(0).standard_normal((5, 3, 256))
    blends = [synthesis.kokoro_style(styles, speaker) for speaker in range(len(synthesis.KOKORO_SPEAKERS))]
    assert all(blend.shape == (3, 256) for blend in blends)
    assert len({blend.tobytes() for blend in blends}) == len(blends)
    assert np.array_equal(synthesis.kokoro_style(styles, 3), blends[3])  # a speaker is the same in every run


def test_kokoro_has_its_five_styles_and_the_sentence_endings_in_its_vocabulary() -> None:
    _, vocabulary, styles = synthesis.kokoro_voice()
    assert styles.shape == (5, 510, 256)
    assert all(symbol in vocabulary for symbol in synthesis.PIPER_ENDINGS)


def test_open_set_plan_keeps_the_word_clips_and_draws_unknown_words_outside_the_vocabulary() -> None:
    words = ("yes", "no", "one")
    plan = synthesis.plan(600, seed=0, labels=(*words, "_unknown_", "_silence_"))
    assert [clip.label for clip in plan[:5]] == [*words, "_unknown_", "_silence_"]
    unknown = [clip.text for clip in plan if clip.label == "_unknown_"]
    assert len(set(unknown)) > 40 and not set(unknown) & set(words)
    assert all(clip.text == "" for clip in plan if clip.label == "_silence_")
    assert all(clip.text == clip.label for clip in plan if clip.label in words)
    assert len({clip.relpath() for clip in plan}) == len(plan)
    digits = synthesis.plan(50, seed=0)
    assert [(clip.label, clip.text) for clip in digits] == [(clip.label, clip.label) for clip in digits]


def test_any_vocabulary_is_said_by_every_engine_with_unknown_words_and_silence(tmp_path: Path) -> None:
    labels = ("lights on", "stop", "_unknown_", "_silence_")
    synthesis.generate(tmp_path, 16, seed=0, piper_clips=8, kokoro_clips=8, labels=labels)
    for label in labels:
        files = sorted((tmp_path / label).glob("*.wav"))
        assert len(files) == 8, label
        for path in files:
            wave, rate = soundfile.read(path, dtype="float64")
            assert rate == 16000 and wave.size == 16000
            level = 20 * np.log10(np.sqrt(np.mean(wave**2)))
            if label == "_silence_":
                assert -56 <= level <= -24, "noise at its drawn level, above preprocess's -60 dBFS floor"
                assert np.abs(wave).max() < 0.2
            else:
                assert np.abs(wave).max() > 10 ** (-21 / 20), "a word at its drawn peak level"


def test_a_word_that_cannot_be_said_is_refused_before_any_clip_is_made(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot say 'r2d2'"):
        synthesis.generate(tmp_path / "raw", 10, seed=0, labels=("yes", "r2d2"))
    assert not (tmp_path / "raw").exists()
