"""Learned rewards: training image success classifiers that stand in for ground truth on physical arms.

`data` (labels, frames), `train` (`robot-rl train-classifier`), `evaluate` (`robot-rl eval-classifier`),
`collect` (`robot-rl collect-frames`). The model and its checkpoint are `robot_rl.agents.success_classifier`;
the reward wrapper is `robot_rl.envs.classifier_reward`.
"""
