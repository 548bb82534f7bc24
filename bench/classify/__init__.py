"""The downstream classifier machinery: build, fit and score a classifier on real (+ synthetic) images."""
