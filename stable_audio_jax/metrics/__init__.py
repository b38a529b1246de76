"""Evaluation metrics: retrieval recall, CLAP score."""
