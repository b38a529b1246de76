"""Diffusion objective and inference: the cosine (v-diffusion) schedule and v-target,
sigma schedules, jitted k-diffusion-style samplers (Euler, DDIM, DPM-Solver++ 2M/2M SDE/3M SDE)
and classifier-free guidance with rescale."""
