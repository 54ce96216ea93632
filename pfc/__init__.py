"""pfc (under construction)."""
