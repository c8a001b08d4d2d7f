"""Everything that imports Ray: Ray Tune's trials and schedulers, starting or joining a cluster,
Ray Jobs, Tune's checkpoints."""
