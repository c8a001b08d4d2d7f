"""One trial (or a stack of trials trained as one computation): data, network, optimizer,
training loop, checkpoints. Torch only: nothing here knows of sweeps, Ray or MLflow."""
