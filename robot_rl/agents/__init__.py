"""Learner-side agents: networks, image encoders and the RL algorithms that train them."""
