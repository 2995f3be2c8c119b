"""Stages of the indirect-learning pipeline (`distill.pipeline`): config, cache, data, fits,
evaluate, physical (MD and analysis)."""
