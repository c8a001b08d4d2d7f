"""Probes of science.md §4; each imports only torch."""
