"""The diffusion model: sampler settings and state, the pipeline adapter with its one guided
UNet call, attention-processor hooks, early trajectories, and the random-weights dummy pipeline."""
