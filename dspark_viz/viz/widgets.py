"""The notebooks' one import: ``from dspark_viz.viz import widgets as W``.

Scope: re-exports, nothing defined here. What the tutorial notebooks (``notebooks/``) use
beyond the library's own figures lives in small modules of this package —
- ``viz.tutorial``: presets (``get_preset``), the target, drafters (tiny ones trained once by
  the toolchain), prompts and prefilled sessions of a preset;
- ``viz.stepper``: ``RoundStepper``, Play / slider / Step / Back over real decoding rounds,
  showing the panels of ``viz.panels`` (``PANELS``: the names to choose from);
- ``viz.toy_vocab``: rejection sampling and the multi-modal collision on toy vocabularies
  (notebooks 1 and 2); ``viz.markov_stats``: what the Markov head does, and teacher-forced
  acceptance per position (notebook 2);
- ``viz.admission``: Algorithm 1 one candidate at a time and Appendix A (notebooks 4 and 5);
- ``viz.training_figures``: training curves (notebook 6).
The toolchain commands themselves run through ``dspark_viz.cli.run_cli``.
"""
from __future__ import annotations

from dspark_viz.config import NOTEBOOK_PRESETS, NotebookPreset
from dspark_viz.viz.admission import (AdmissionStepper, appendix_a_capacity, appendix_a_figure,
                                      appendix_a_trials, cliff_capacity, pool_views)
from dspark_viz.viz.figures import markov_changed
from dspark_viz.viz.markov_stats import (first_markov_round, markov_figure, markov_stats,
                                         teacher_forced, teacher_forced_figure)
from dspark_viz.viz.stepper import PANELS, RoundStepper, first_differing_round
from dspark_viz.viz.toy_vocab import (collision_experiment, collision_figure, rejection_demo,
                                      rejection_figure, rejection_pieces, sample_first_token)
from dspark_viz.viz.training_figures import read_metrics, training_curves_figure
from dspark_viz.viz.tutorial import (ENV_PRESET, get_preset, live_session, load_tutorial_target,
                                     train_tiny_drafters, tutorial_dir, tutorial_drafters,
                                     tutorial_prompts)

__all__ = ["NotebookPreset", "NOTEBOOK_PRESETS", "ENV_PRESET", "get_preset", "load_tutorial_target",
           "tutorial_dir", "tutorial_drafters", "train_tiny_drafters", "tutorial_prompts",
           "live_session", "RoundStepper", "PANELS", "first_differing_round", "rejection_pieces",
           "sample_first_token",
           "rejection_figure", "rejection_demo", "collision_experiment", "collision_figure",
           "markov_stats", "markov_figure", "first_markov_round", "markov_changed", "teacher_forced",
           "teacher_forced_figure", "AdmissionStepper",
           "pool_views", "appendix_a_capacity", "cliff_capacity", "appendix_a_trials",
           "appendix_a_figure",
           "read_metrics", "training_curves_figure"]
