"""From a source to files on disk: fetch and extract archives, synthesise speech, split, and the processed and
embedded split files the later stages read.
"""
