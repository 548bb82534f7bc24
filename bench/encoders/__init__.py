"""Encoders shipped with bench: pixel (identity with scaling) and the FLUX VAE."""
