"""Flat buffers and the pure math of laying parameters out in them."""
