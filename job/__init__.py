"""lenet-mnist: train LeNet-5 on MNIST, report, plot, and export verified TorchScript / ONNX models."""
