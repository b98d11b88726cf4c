"""The downstream side of lenet-mnist: read pictures of digits with an exported ONNX model, without torch.

    lenet_client.contract    tensor names and metadata keys of the exported model (docs/model-contract.md)
    lenet_client.preprocess  any picture of one digit -> the MNIST-style 28x28 input (numpy + Pillow)
    lenet_client.pictures    which files are pictures (.png .jpg .jfif .webp .avif ...), and opening one safely
    lenet_client.predict     load a model (a file or a published run) and classify pictures; `lenet-predict`

Nothing here imports torch or the training job: `pip install ./client` is all an app needs.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lenet-mnist-client")
except PackageNotFoundError:  # run from a source folder that was not installed
    __version__ = "unknown (not installed)"
