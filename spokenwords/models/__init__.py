"""The models: architectures and their registry, the frozen speech embedding, checkpoints and ONNX export."""
