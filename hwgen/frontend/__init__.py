"""PyTorch front end: quantizers, the quantized time-series Transformer, training and export to the IR."""
