"""Simulated venues: pure matching engines driven by recorded market events and virtual time."""
