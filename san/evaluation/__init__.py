"""Scoring: embedding kernels, retrieval metrics, re-ranking, reports (torch-free) and the
torch model's evaluation (:mod:`san.evaluation.evaluate`)."""
