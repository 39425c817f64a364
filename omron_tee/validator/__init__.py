"""The validator: benchmark probes, scoring, weights, and the third-party API."""
