"""Benchmarks of chaski-actors side by side with the peers it is measured against.

Run everything with ``python bench/run.py`` (``--quick`` for a smoke test);
the results land in ``bench/results.json`` and ``bench/RESULTS.md``. Figures
from one machine mean little on another, so every chaski figure is reported
with its ratio to a peer measured in the same run.
"""
