"""srdeploy.plugins (see README)."""
