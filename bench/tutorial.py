"""A faithful reimplementation of the tutorial's pipeline, the baseline of the benchmark.

torchvision's MNIST with a per-sample PIL -> ToTensor transform, DataLoader at batch 32 (shuffled for
training), plain SGD at lr 0.01, cross-entropy, and a `.item()` per batch for the running metrics, as the
tutorial's train() and test() do. The model is job.training.model's LeNet, whose padded conv1 makes the tutorial's
forward pass work at all, with its convolution blocks put back in the tutorial's form (ReLU, then `nn.MaxPool2d`), so
that the job's faster pooling does not also speed up the baseline.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from job.training.model import MaxPool2x2, build_model


def train(dataloader, model, loss_fn, optimizer, device):
    size = len(dataloader.dataset)
    num_batches = len(dataloader)
    train_loss, train_acc = 0, 0
    for X, y in dataloader:
        X, y = X.to(device), y.to(device)
        pred = model(X)
        loss = loss_fn(pred, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        train_acc += (pred.argmax(1) == y).type(torch.float).sum().item()
        train_loss += loss.item()
    return train_acc / size, train_loss / num_batches


def test(dataloader, model, loss_fn, device):
    size = len(dataloader.dataset)
    num_batches = len(dataloader)
    test_loss, test_acc = 0, 0
    with torch.no_grad():
        for imgs, target in dataloader:
            imgs, target = imgs.to(device), target.to(device)
            target_pred = model(imgs)
            loss = loss_fn(target_pred, target)
            test_loss += loss.item()
            test_acc += (target_pred.argmax(1) == target).type(torch.float).sum().item()
    return test_acc / size, test_loss / num_batches


def tutorial_model(variant: str, dropout: float) -> nn.Module:
    """job.training.model's LeNet with each `MaxPool2x2, ReLU` pair replaced by the tutorial's `ReLU, MaxPool2d(2)`."""
    model = build_model(variant, dropout)
    layers = list(model.features)
    for i, layer in enumerate(layers):
        if isinstance(layer, MaxPool2x2):
            assert isinstance(layers[i + 1], nn.ReLU)
            layers[i], layers[i + 1] = layers[i + 1], nn.MaxPool2d(2)
    model.features = nn.Sequential(*layers)
    return model


def run(data_dir: str, variant: str, epochs: int, seed: int, train_limit: int | None, device: str = "cpu"):
    """Return the final test accuracy, as the tutorial computes it."""
    torch.manual_seed(seed)
    transform = torchvision.transforms.ToTensor()
    train_ds = torchvision.datasets.MNIST(data_dir, train=True, transform=transform, download=False)
    test_ds = torchvision.datasets.MNIST(data_dir, train=False, transform=transform, download=False)
    if train_limit:
        train_ds = torch.utils.data.Subset(train_ds, range(train_limit))
    train_dl = torch.utils.data.DataLoader(train_ds, batch_size=32, shuffle=True)
    test_dl = torch.utils.data.DataLoader(test_ds, batch_size=32)
    model = tutorial_model(variant, dropout=0.5).to(device)
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    for epoch in range(epochs):
        model.train()
        epoch_train_acc, epoch_train_loss = train(train_dl, model, loss_fn, opt, device)
        model.eval()
        epoch_test_acc, epoch_test_loss = test(test_dl, model, loss_fn, device)
        print(f"[tutorial {variant}] Epoch:{epoch + 1:2d}, Train_acc:{epoch_train_acc * 100:.1f}%, "
              f"Train_loss:{epoch_train_loss:.3f}, Test_acc:{epoch_test_acc * 100:.1f}%, "
              f"Test_loss:{epoch_test_loss:.3f}", flush=True)
    return epoch_test_acc
