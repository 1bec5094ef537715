"""srdeploy.runtime (see README)."""
