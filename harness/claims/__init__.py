"""The seed papers' claims as registered experiments: what each states, where, what it measures in a
results store, and the test declared before any run (harness.claims.claim); the claims themselves
(harness.claims.catalog); running them and writing the claims table (harness.claims.runner)."""
