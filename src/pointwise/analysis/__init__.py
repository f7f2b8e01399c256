"""Renderers and published tables for :func:`pointwise.analyze.analyze`'s reports.

* :mod:`pointwise.analysis.render`: the terminal table, JSON, CSV and the PNG chart.
* :mod:`pointwise.analysis.papers`: the papers' tables, transcribed once as data, beside our
  own counts (GoogLeNet Table 1, MobileNet v1 Table 2, ResNet Table 1's FLOPs row).
"""
