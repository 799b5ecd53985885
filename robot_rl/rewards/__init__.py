"""Learned rewards: image success classifiers that stand in for ground truth on physical arms."""
