"""scale wing."""
