"""Kokoro's phonemes for any English word or phrase, from espeak-ng's own en-us phonemiser, so no word needs a
hand-written transcription.

espeak-ng (the ``espeakng-loader`` wheel, through its C API with ctypes) writes the text in IPA, with multi-letter
phonemes tied (``a͡ɪ``, ``t͡ʃ``); a few general rules then rewrite that IPA in misaki's US English symbols, the set
Kokoro was trained on (``A`` = eɪ, ``I`` = aɪ, ``O`` = oʊ, ``W`` = aʊ, ``Y`` = ɔɪ, ``ᵊ`` a reduced schwa, ...).

Process hygiene: espeak-ng keeps hidden global state, which a synthesis process must never inherit (see
``spokenwords.data.synthesis``), so importing this module loads nothing; espeak-ng is loaded on the first call, in the
process that makes it, and kept there with each text's phonemes. Call ``kokoro_phonemes`` only in a process that renders
no espeak-ng audio and forks no synthesis workers: the Kokoro speaker's own worker, or a child process made for the
purpose (as the tests do).
"""

from __future__ import annotations

import ctypes
import functools
import os
import re

import espeakng_loader

from spokenwords.cli import UserError

VOICE = "en-us"
# misaki's US English symbols (its ``US_VOCAB``), all in Kokoro's vocabulary, and the space between words.
MISAKI_US = frozenset("AIOWYbdfhijklmnpstuvwzæðŋɑɔəɛɜɡɪɹɾʃʊʌʒʤʧˈˌθᵊᵻʔ ")
PRIMARY, SECONDARY = "ˈ", "ˌ"
_FIRST_VOWEL = re.compile("[AIOWYiuæɑɔəɛɜɪʊʌᵻ]")  # misaki's vowels that can carry stress (not ᵊ)

# From espeak-ng's speak_lib.h: espeakCHARS_UTF8, and espeakPHONEMES_IPA | espeakPHONEMES_TIE with the tie
# character in bits 8-23, so that a phoneme written with several letters comes out joined by U+0361.
_CHARS_UTF8 = 1
_TIE = "\u0361"
_PHONEME_MODE = 0x02 | 0x80 | ord(_TIE) << 8

# espeak's en-us IPA to misaki's symbols, applied in order.
_RULES = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        # Diphthongs and affricates (tied by espeak, so a + ɪ across two phonemes is left alone) are one symbol each.
        ("a͡ɪ", "I"),
        ("a͡ʊ", "W"),
        ("e͡ɪ", "A"),
        ("o͡ʊ", "O"),
        ("ɔ͡ɪ", "Y"),
        ("t͡ʃ", "ʧ"),
        ("d͡ʒ", "ʤ"),
        # The American NEAR vowel before r is ɪ, as espeak itself writes "here" hˈɪ͡ɹ ("zero" comes as zˈi͡əɹo͡ʊ).
        ("i͡əɹ", "ɪɹ"),
        # Syllabic consonants (espeak's ə͡l, and n̩ with U+0329) are misaki's reduced schwa before the consonant.
        ("ə͡l", "ᵊl"),
        (r"(\w)\u0329", r"ᵊ\1"),
        # The other tied phonemes are plain sequences in misaki: r-coloured vowels (ɑː͡ɹ), triphthongs (I͡ɚ), i͡ə.
        (_TIE, ""),
        # American r-coloured vowels: NURSE is ɜɹ, unstressed ɚ is əɹ, and r is never doubled ("Korea" kɚɹˈiːə).
        ("ɜː?ɹ?", "ɜɹ"),
        ("ɚ", "əɹ"),
        ("ɹ+", "ɹ"),
        # misaki's US set has no long vowels.
        ("ː", ""),
        # Sounds outside American English become the nearest English one; nasalisation and palatalisation go.
        ("ɐ", "ə"),
        ("r", "ɹ"),
        ("[xç]", "k"),
        ("ɬ", "l"),
        (r"[\u0303ʲ]", ""),
    )
)


def check_status(lib: ctypes.CDLL, status: int, what: str) -> None:
    """Turn an espeak_ng_STATUS into a ``UserError`` carrying espeak's own message."""
    if status != 0:
        message = ctypes.create_string_buffer(512)
        lib.espeak_ng_GetStatusCodeMessage(status, message, len(message))
        raise UserError(f"{what}: {message.value.decode(errors='replace')}")


def load_espeak() -> tuple[ctypes.CDLL, str]:
    """espeak-ng's library from the espeakng-loader wheel, initialised with the wheel's data (never a system
    install), and that data's folder; the phonemiser here and ``synthesis.Espeak`` both start from it.
    """
    try:
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        data_path = espeakng_loader.get_data_path()
    except (OSError, RuntimeError) as error:
        raise UserError(
            f"cannot load espeak-ng from the espeakng-loader wheel ({error}); "
            "reinstall it: pip install -r requirements.txt"
        ) from error
    lib.espeak_ng_InitializePath.argtypes = [ctypes.c_char_p]
    lib.espeak_ng_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_ng_InitializePath(os.fsencode(data_path))
    check_status(lib, lib.espeak_ng_Initialize(None), f"cannot initialise espeak-ng with the data in {data_path}")
    return lib, data_path


@functools.cache
def _espeak() -> ctypes.CDLL:
    """espeak-ng set to the en-us voice for phonemising: loaded once, on first use (see above)."""
    lib, _ = load_espeak()
    lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
    lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
    check_status(lib, lib.espeak_ng_SetVoiceByName(VOICE.encode()), f"espeak-ng voice '{VOICE}'")
    return lib


def espeak_ipa(text: str) -> str:
    """espeak-ng's en-us IPA for ``text``, multi-letter phonemes tied, its clauses joined by spaces."""
    lib = _espeak()
    buffer = ctypes.create_string_buffer(text.encode())
    pointer = ctypes.c_void_p(ctypes.addressof(buffer))
    clauses = []
    while pointer.value:  # one clause per call; espeak moves the pointer on, and sets it to NULL after the last
        clauses.append(lib.espeak_TextToPhonemes(ctypes.byref(pointer), _CHARS_UTF8, _PHONEME_MODE).decode().strip())
    return " ".join(clause for clause in clauses if clause)


def misaki_phonemes(ipa: str, text: str) -> str:
    """espeak's IPA for ``text`` in misaki's US English symbols; ``UserError`` if Kokoro cannot say it."""
    phonemes = ipa
    for pattern, replacement in _RULES:
        phonemes = pattern.sub(replacement, phonemes)
    if PRIMARY not in phonemes:  # said alone, a word has a primary stress, even one espeak reads as unstressed:
        if SECONDARY in phonemes:  # the first secondary stress ("one" wˌʌn),
            phonemes = phonemes.replace(SECONDARY, PRIMARY, 1)
        else:  # else the first vowel ("from" fɹʌm)
            phonemes = _FIRST_VOWEL.sub(rf"{PRIMARY}\g<0>", phonemes, count=1)
    unknown = sorted(set(phonemes) - MISAKI_US)
    if unknown:
        symbols = ", ".join(f"'{symbol}'" for symbol in unknown)
        raise UserError(f"Kokoro cannot say '{text}': espeak-ng's phonemes '{ipa}' hold {symbols}, not in misaki's set")
    if not phonemes.strip(f"{PRIMARY}{SECONDARY} "):
        raise UserError(f"Kokoro cannot say '{text}': espeak-ng finds no phonemes in it")
    return phonemes


@functools.cache
def kokoro_phonemes(text: str) -> str:
    """Kokoro's phonemes for an English word or phrase (e.g. "zero" -> "zˈɪɹO"), cached per text in the process."""
    return misaki_phonemes(espeak_ipa(text), text)
