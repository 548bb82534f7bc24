"""priors wing."""
