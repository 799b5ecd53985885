"""The `robot-rl` command."""
