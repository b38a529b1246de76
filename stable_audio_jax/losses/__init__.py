"""Training losses: multi-resolution STFT, adversarial/feature matching, KL."""
