"""Robots: pure trading strategies, the deterministic runner, the simulated venue, controls."""
