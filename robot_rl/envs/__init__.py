"""Gymnasium envs over the robot bridge (`robot_rl/PickCube-v0`, `robot_rl/PegInsertion-v0`)."""
