"""Handlers for non-diffusion task types."""
