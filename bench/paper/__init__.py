"""The paper's own reports (its four claims, its ablation roles), built on the generic report wing."""
