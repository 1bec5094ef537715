"""srdeploy.export (see README)."""
