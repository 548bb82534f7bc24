"""Backbones shipped with bench: the FLUX transformer adapter and an MLP for vector data."""
