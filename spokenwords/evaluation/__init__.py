"""Scores and figures of a trained model: classification reports, open-set scores, confusion, plots."""
