"""The chat backend's one public URL: verifies user JWTs and routes to the services."""
