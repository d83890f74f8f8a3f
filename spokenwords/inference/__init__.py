"""Inference shared by the stages and both predictors; the ONNX predictor's modules import no torch."""
