"""Headless WanGP worker: task store, routing, handlers and utilities."""
