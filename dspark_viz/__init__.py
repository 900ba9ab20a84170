"""dspark_viz: DSpark speculative decoding with every internal visible."""
__version__ = "0.1.0"
