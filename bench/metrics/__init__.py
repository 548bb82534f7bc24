"""metrics wing."""
