"""dspark_viz.viz."""
