"""pipeline wing."""
