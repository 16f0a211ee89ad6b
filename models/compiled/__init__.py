"""Compiled (numba) posteriors handed to nutpie; the block layout; the nutpie adapter."""
