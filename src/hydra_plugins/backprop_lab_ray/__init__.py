"""backprop-lab's Hydra launcher plugin (Hydra instantiates plugins from hydra_plugins only)."""
