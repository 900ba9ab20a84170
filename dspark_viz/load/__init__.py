"""dspark_viz.load."""
