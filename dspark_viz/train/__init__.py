"""dspark_viz.train."""
