"""convjax.compare: the experiment runner of ``convjax compare <experiment>``.

Trains arms that differ in one switch (padding, pooling, normalisation, convolution) over
seeds and writes a Markdown table, per-epoch curves and the raw runs; see
:mod:`convjax.compare.runner` for the files written and :mod:`convjax.configs.compare` for
the shipped experiments. ``python -m convjax.compare`` is the same as ``convjax compare``.

Example:
  >>> from convjax import compare
  >>> "padding" in compare.shipped_experiments()
  True
"""

from convjax.compare.runner import (
    ArmProgram,
    arm_config,
    check_experiment,
    flex_kernel_sizes,
    load_experiment,
    load_results,
    main,
    markdown_table,
    plot_curves,
    plot_differences,
    plot_kernel_sizes,
    run_experiment,
    shipped_experiments,
    summarize,
)

__all__ = [
    "ArmProgram",
    "arm_config",
    "check_experiment",
    "flex_kernel_sizes",
    "load_experiment",
    "load_results",
    "main",
    "markdown_table",
    "plot_curves",
    "plot_differences",
    "plot_kernel_sizes",
    "run_experiment",
    "shipped_experiments",
    "summarize",
]
