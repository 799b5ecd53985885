"""MuJoCo twins: the simulated arm, task ground truth and cameras behind the same robot server."""
