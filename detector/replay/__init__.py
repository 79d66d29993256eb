"""Replays and simulations."""
