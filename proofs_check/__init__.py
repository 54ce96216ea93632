"""proofs_check (under construction)."""
