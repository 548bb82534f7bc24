"""`bench bench`: performance cases measured against reference implementations in the same run."""
