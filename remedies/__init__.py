"""Built-in long-tail remedies for the downstream classifier (bench.remedy)."""
