"""Measures of generators and reconstructions."""
