"""Tests of audio: decoding, shaping and augmentation."""
