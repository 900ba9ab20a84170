"""dspark_viz.data."""
