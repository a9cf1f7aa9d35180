"""The golden functions by name, for callers outside the interpreter (tests, the synthetic graphs).

Each is defined once, in its op's module in ``hwgen.ops`` (the one rounding rule in
``hwgen.ops.rounding``); this module only gathers them.
"""

from hwgen.ops.add import add, add_acc
from hwgen.ops.affine import affine, affine_acc
from hwgen.ops.anomaly_score import anomaly_acc, anomaly_diff, anomaly_score
from hwgen.ops.argmax import argmax
from hwgen.ops.attn_apply import attn_apply, attn_apply_acc
from hwgen.ops.attn_scores import attn_scores, attn_scores_acc, merge_heads, split_heads
from hwgen.ops.avgpool import avgpool, avgpool_acc
from hwgen.ops.conv1d import conv1d, conv1d_acc, im2col
from hwgen.ops.layernorm import layernorm, layernorm_parts
from hwgen.ops.linear import linear, linear_acc
from hwgen.ops.rounding import I64, clamp, isqrt, requantize, round_shift
from hwgen.ops.softmax import softmax, softmax_parts

__all__ = ["I64", "add", "add_acc", "affine", "affine_acc", "anomaly_acc", "anomaly_diff", "anomaly_score", "argmax",
           "attn_apply", "attn_apply_acc", "attn_scores", "attn_scores_acc", "avgpool", "avgpool_acc", "clamp",
           "conv1d", "conv1d_acc", "im2col", "isqrt", "layernorm", "layernorm_parts", "linear", "linear_acc",
           "merge_heads", "requantize", "round_shift", "softmax", "softmax_parts", "split_heads"]
