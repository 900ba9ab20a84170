"""dspark_viz.eval."""
