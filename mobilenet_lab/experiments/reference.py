"""The reference recipe the benchmark compares against: the well-known PyTorch MNIST example (pytorch/examples,
``mnist/main.py``), written here from its description.

Two 3x3 convolutions (32 and 64 channels) with ReLU, 2x2 max-pool, dropout 0.25, fc 9216-128, ReLU, dropout 0.5, fc
128-10, log-softmax with NLL loss; Adadelta at learning rate 1.0 with StepLR gamma 0.7 after every epoch; batch 64;
every item turned into a PIL image, converted with ToTensor and normalised with mean 0.1307 and std 0.3081 by a per-item
DataLoader (as torchvision's MNIST dataset does); test batches of 1000 after every epoch."""
import time
from typing import Callable

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

MEAN, STD = 0.1307, 0.3081
BATCH_SIZE, TEST_BATCH_SIZE = 64, 1000
LEARNING_RATE, GAMMA = 1.0, 0.7


class ReferenceNet(nn.Module):
    """The example's network (about 1.2 million parameters, 9216-128 in the first fc layer)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        x = self.dropout1(F.max_pool2d(x, 2))
        x = self.dropout2(F.relu(self.fc1(torch.flatten(x, 1))))
        return F.log_softmax(self.fc2(x), dim=1)


class PilItems(Dataset):
    """uint8 images (N, 1, 28, 28) served one at a time as the example's data are: a PIL image per item, then ToTensor
    and Normalize."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y
        self.transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))])

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.x[i, 0].numpy(), mode="L")), int(self.y[i])


def check_steps(steps_per_epoch: int, checks_per_epoch: int) -> set[int]:
    """The step counts (1-based) after which an epoch's checks before its end run, evenly spaced."""
    return {round(k * steps_per_epoch / checks_per_epoch) for k in range(1, checks_per_epoch)} - {0}


@torch.inference_mode()
def test_accuracy(net: nn.Module, loader: DataLoader) -> tuple[float, float]:
    """(mean NLL loss, accuracy) over the loader's samples."""
    net.eval()
    loss_sum, correct, n = 0.0, 0, 0
    for xb, yb in loader:
        out = net(xb)
        loss_sum += float(F.nll_loss(out, yb, reduction="sum"))
        correct += int((out.argmax(1) == yb).sum())
        n += len(yb)
    return loss_sum / n, correct / n


def train_reference(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                    epochs: int, seed: int = 1, stop_at: float | None = None, checks_per_epoch: int = 1,
                    on_epoch_end: Callable[[dict], None] | None = None) -> dict:
    """Train the example recipe, testing after every epoch as the example does."""
    torch.manual_seed(seed)
    net = ReferenceNet()
    train_loader = DataLoader(PilItems(train_x, train_y), batch_size=BATCH_SIZE, shuffle=True)
    test_loader = DataLoader(PilItems(test_x, test_y), batch_size=TEST_BATCH_SIZE)
    opt = torch.optim.Adadelta(net.parameters(), lr=LEARNING_RATE)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=GAMMA)
    history = {"epoch": [], "test_loss": [], "test_acc": [], "seconds": [], "step_seconds": [],
               "data_seconds": [], "checks": [], "parameters": sum(p.numel() for p in net.parameters())}
    steps = len(train_loader)
    checks_at = check_steps(steps, checks_per_epoch)
    for epoch in range(1, epochs + 1):
        net.train()
        started = time.perf_counter()
        earlier_seconds = sum(history["seconds"])
        data_seconds, check_seconds, step, batches = 0.0, 0.0, 0, iter(train_loader)
        while True:
            fetched = time.perf_counter()
            try:
                xb, yb = next(batches)
            except StopIteration:
                break
            data_seconds += time.perf_counter() - fetched
            opt.zero_grad()
            loss = F.nll_loss(net(xb), yb)
            loss.backward()
            opt.step()
            step += 1
            if step in checks_at:
                checked = time.perf_counter()
                accuracy = test_accuracy(net, test_loader)[1]
                net.train()
                history["checks"].append({"epoch": epoch - 1 + step / steps, "accuracy": accuracy,
                                          "seconds": earlier_seconds + time.perf_counter() - started})
                check_seconds += time.perf_counter() - checked
        step_seconds = time.perf_counter() - started - check_seconds
        scheduler.step()
        test_loss, test_acc = test_accuracy(net, test_loader)
        seconds = time.perf_counter() - started
        history["checks"].append({"epoch": epoch, "accuracy": test_acc, "seconds": earlier_seconds + seconds})
        for key, value in (("epoch", epoch), ("test_loss", test_loss), ("test_acc", test_acc),
                           ("seconds", seconds), ("step_seconds", step_seconds), ("data_seconds", data_seconds)):
            history[key].append(value)
        if on_epoch_end is not None:
            on_epoch_end(history)
        if stop_at is not None and test_acc >= stop_at:
            break
    return history
