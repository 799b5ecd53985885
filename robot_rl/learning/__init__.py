"""Learner side: run folders, metrics, checkpoints, plots and the training loops that use them."""
