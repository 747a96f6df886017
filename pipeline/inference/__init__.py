"""Paddle inference: predictor (once), classifier, detector, loading, predictions, switching."""
