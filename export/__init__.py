"""The producer side of the exported models: write a trained LeNet as TorchScript, a torch.export program and ONNX
(export.formats), and prove that each file predicts what the trained model predicts (export.parity, with the
figures in export.checks). Needs torch; it uses the client (lenet_client) for the contract and atomic writes, and
never the job. The consumer side, which apps install without torch, is the client in client/.
"""
