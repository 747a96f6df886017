"""Paddle inference: models, preprocessing, predictions, model switching."""
