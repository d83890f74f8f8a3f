"""Tests of models: architectures, the embedding, checkpoints, ONNX export."""
