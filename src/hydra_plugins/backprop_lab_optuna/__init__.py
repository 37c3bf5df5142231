"""backprop-lab's Hydra sweeper plugin (Hydra instantiates plugins from hydra_plugins only)."""
