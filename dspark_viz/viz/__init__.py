"""dspark_viz.viz: what people look at — figures, token HTML, the panel registry, the explorer's
playback state and the notebooks' helpers (``widgets``). Pure over traces; no model calls of
its own besides stepping the sessions it is given."""
