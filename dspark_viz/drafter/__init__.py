"""dspark_viz.drafter."""
