"""hwgen.nn: quantized layers to compose in an ordinary ``torch.nn.Module``, and ``convert``.

Named and parametrised like ``torch.nn`` plus keyword-only bit widths; channels-last tensors
([batch, time, channels]). In their forward each layer computes its output integers with the golden
function of the IR op it exports to, so the model's forward, the integer graph (``hwgen.golden``) and the
hardware agree bit for bit; gradients are straight-through (``hwgen.nn.quant``). Importing this package
loads torch and changes no global torch state.
"""

from hwgen.nn.activations import QuantGELU, QuantSigmoid, QuantSiLU, QuantTanh
from hwgen.nn.convert import convert
from hwgen.nn.conv import QuantConv1d
from hwgen.nn.layers import (LearnedPositionalEncoding, QuantAct, QuantAdd, QuantBatchNorm1d, QuantLayerNorm,
                             QuantLinear, QuantMeanPool, QuantModule, QuantMultiheadAttention, QuantReLU,
                             SinusoidalPositionalEncoding, set_quantized)
from hwgen.nn.quant import integers
from hwgen.nn.select import QuantArgmax, QuantCat, QuantLastStep, QuantMaxPool

__all__ = ["LearnedPositionalEncoding", "QuantAct", "QuantAdd", "QuantArgmax", "QuantBatchNorm1d", "QuantCat",
           "QuantConv1d", "QuantGELU", "QuantLastStep", "QuantLayerNorm", "QuantLinear", "QuantMaxPool",
           "QuantMeanPool", "QuantModule", "QuantMultiheadAttention", "QuantReLU", "QuantSiLU", "QuantSigmoid",
           "QuantTanh",
           "SinusoidalPositionalEncoding", "convert", "integers", "set_quantized"]
