"""The benchmark suites, by name: each module has ``DEFAULTS`` (rounds, time per round,
warm-up, tolerance) and ``run(settings, roofs, say, **options) -> rows``, and may have
``text(rows) -> str``, its own report (else the common table).

A new suite is a module here and a line in :data:`SUITES`.
"""

from pointwise.bench.suites import blocks, burst, kxk, models, ops
from pointwise.bench.suites.common import Settings
from pointwise.bench.suites.models import MODELS
from pointwise.bench.suites.ops import SHAPES, Shape

__all__ = ["MODELS", "SHAPES", "SUITES", "Settings", "Shape"]

#: suite name -> its module
SUITES = {"ops": ops, "kxk": kxk, "blocks": blocks, "models": models, "burst": burst}
