"""Measuring models: `rl eval next-token`, `rl profile`, paired statistics, the demo's learning report."""
