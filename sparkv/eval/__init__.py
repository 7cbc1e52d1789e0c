"""Evaluation harness: RULER (generated offline), needle-in-a-haystack grids, LongBench (local files), reports.

Entry points: the ``sparkv eval`` command line (:data:`sparkv.eval.cli.eval_app`) and
:func:`sparkv.eval.runner.run_eval` with an :class:`sparkv.eval.config.EvalConfig`.
"""

from sparkv.eval.config import EvalConfig, EvalError  # noqa: F401
