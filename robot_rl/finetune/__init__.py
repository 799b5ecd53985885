"""Fine-tuning a frozen diffusion BC policy without touching its weights: residual RL (an agent
adds a small correction to every base action) and DSRL (an agent picks the base's initial
diffusion noise). The base is part of the environment here: `wrappers` turns it plus an env into
the env the RL agent sees."""
