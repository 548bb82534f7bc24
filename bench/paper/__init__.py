"""The paper's own reports (its four claims, its ablation table and roles, the tables `bench tables`
writes), built on the generic report wing."""
