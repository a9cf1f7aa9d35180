"""The shared hardware units, by the ``hwgen.ops.Unit`` kind each runs (the one table lowering, the top
level and the estimators look units up in)."""

from __future__ import annotations

from hwgen.hw.concat import ConcatUnit
from hwgen.hw.eltwise import AddUnit, AffineUnit, AvgpoolUnit
from hwgen.hw.heads import AnomalyScoreUnit, ArgmaxUnit
from hwgen.hw.lut import LutUnit
from hwgen.hw.matmul import MatmulUnit
from hwgen.hw.norm import LayerNormUnit
from hwgen.hw.select import SelectUnit
from hwgen.hw.softmax import SoftmaxUnit

UNITS = {unit.kind: unit for unit in (MatmulUnit, AddUnit, AffineUnit, AvgpoolUnit, SoftmaxUnit, LayerNormUnit,
                                      ArgmaxUnit, AnomalyScoreUnit, LutUnit, SelectUnit,
                                      ConcatUnit)}
