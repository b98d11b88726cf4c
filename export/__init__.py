"""Exported models and their contract: TorchScript, torch.export and ONNX files of a trained LeNet.

This package's `__init__`, `contract`, `predict`, `preprocess` and `ink` modules must not import torch: a slim
downstream image with only onnxruntime, numpy and Pillow uses them. The torch-side code lives in `export.formats` and
`export.parity`.
"""
