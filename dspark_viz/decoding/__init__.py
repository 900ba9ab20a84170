"""dspark_viz.decoding."""
