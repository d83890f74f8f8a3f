"""spokenwords: train and run a spoken-word classifier for any vocabulary, the library behind the DVC stages.

The subpackages follow the data's path: ``data`` (sources, synthesis, splits, the processed and embedded files),
``audio`` (decoding, localisation, front ends, augmentation), ``models`` (architectures, the frozen embedding, the
checkpoint and ONNX export), ``training`` (the loop, data-parallel runs, resume), ``evaluation`` (scores and figures)
and ``inference`` (what both predictors share; the ONNX path imports no torch).
"""
