"""The data loader: the assignment's dataset as a ``torch.utils.data.Dataset`` (a train and a test part, each a folder
or .zip of a CSV of image name and label and the images, decoded once into memory), its split into training and
validation sets, and the DataLoader that serves it in batches."""
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, WeightedRandomSampler

from .config import Config
from .errors import UserError
from .reading import decode_part, find_part

VAL_SHARE, VAL_MIN = 0.02, 300  # the default validation split: 2%, at least 300 images (at most a fifth)


class ImageSet(Dataset):
    """Images (uint8 0-255 or floats 0-1; (N, C, H, W) or (N, H, W)) and their labels in memory. ``dataset[i]`` is one
    (image, label) pair, the image a float tensor in [0, 1]; a list of indices gives a whole batch at once, as tensor
    indexing does. ``transform`` (a torchvision transform, say) is applied to every image or batch served."""

    def __init__(self, images, labels, transform=None):
        images = torch.as_tensor(images)
        self.images = images.unsqueeze(1) if images.dim() == 3 else images
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index):
        images = self.images[index]
        images = images.float().div(255) if images.dtype == torch.uint8 else images.float()
        if self.transform is not None:
            images = self.transform(images)
        return images, (int(self.labels[index]) if isinstance(index, int) else self.labels[index])

    def subset(self, indices) -> "ImageSet":
        idx = torch.as_tensor(indices, dtype=torch.int64)
        return ImageSet(self.images[idx], self.labels[idx], self.transform)

    def class_counts(self, num_classes: int) -> list[int]:
        return torch.bincount(self.labels, minlength=num_classes).tolist()

    def split(self, val_size=None, seed: int = 0, train_size=None) -> tuple["ImageSet", "ImageSet"]:
        """(training set, validation set): validation first, stratified and seeded (default 2% of the images, at least
        300 and at most a fifth), then ``train_size`` of the rest for training. A size is a count or a fraction."""
        n = len(self)
        if val_size is None:
            n_val = min(max(round(VAL_SHARE * n), min(VAL_MIN, n // 5)), n - 1)
        else:
            n_val = _count(val_size, n - 1, "--val-size", "training images (one must stay for training)")
        val_idx, rest = stratified_pick(self.labels, max(n_val, 1), seed)
        n_train = _count(train_size, len(rest), "--train-size", "training images left after validation")
        train_idx, _ = stratified_pick(self.labels[rest], n_train, seed)
        return self.subset(rest[train_idx]), self.subset(val_idx)


class MnistCsvDataset(ImageSet):
    """One part of the assignment's dataset (``path``: its folder or .zip, e.g. data/train.zip), decoded once into
    memory, its images converted to ``input_dim`` (C, H, W); ``transform`` as for :class:`ImageSet`."""

    def __init__(self, path: str | Path, input_dim=(1, 28, 28), transform=None):
        images, labels, self.names = decode_part(Path(path), tuple(input_dim))
        super().__init__(images, labels, transform)


def data_loader(dataset: ImageSet, batch_size: int, balanced: bool = False, generator=None) -> DataLoader:
    """A DataLoader of (images, labels) batches in a random order, or drawn with every class equally likely
    (``balanced``). The BatchSampler is the sampler and automatic batching is off (``batch_size=None``), torch's
    documented way to load a whole batch with one index."""
    order = WeightedRandomSampler(1.0 / torch.bincount(dataset.labels).float()[dataset.labels], len(dataset),
                                  generator=generator) if balanced else RandomSampler(dataset, generator=generator)
    return DataLoader(dataset, sampler=BatchSampler(order, batch_size, drop_last=False), batch_size=None)


def stratified_pick(y: torch.Tensor, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices 0..len(y)-1 into (n picked, the rest), keeping class proportions when possible."""
    idx = np.arange(len(y))
    if n >= len(y):
        return idx, idx[:0]
    try:
        picked, rest = train_test_split(idx, train_size=n, stratify=y.numpy(), random_state=seed)
    except ValueError:  # a class too small to stratify, or n below the class count
        picked, rest = train_test_split(idx, train_size=n, random_state=seed)
    return np.sort(picked), np.sort(rest)


def _count(size, available: int, flag: str, what: str) -> int:
    """How many images a size (None: all; an int count; a float fraction) asks for."""
    n = available if size is None else max(1, round(size * available)) if isinstance(size, float) else size
    if n > available:
        raise UserError(f"{flag} {size} is more than the {available} {what}: use at most {available}, "
                        f"or a fraction like 0.5")
    return n


@dataclass
class Splits:
    """The training, validation and test sets, and where they came from."""
    train: ImageSet
    val: ImageSet
    test: ImageSet
    num_classes: int

    @property
    def class_names(self) -> list[str]:
        return [str(i) for i in range(self.num_classes)]


def load_splits(data_dir: str | Path, config: Config, need_train: bool = True, model_path=None) -> Splits:
    """The dataset at ``data_dir`` split as ``config`` says (without ``need_train``, the test part only); ``model_path``
    names the saved model that fixed ``num_classes``, for errors."""
    data_dir = Path(data_dir)
    paths = {"test": find_part(data_dir, "test")}
    if need_train:
        paths["train"] = find_part(data_dir, "train")
    parts = {name: MnistCsvDataset(path, config.input_dim) for name, path in paths.items()}
    for name, part in parts.items():
        top = int(part.labels.max())
        if top >= config.num_classes:
            fix = (f"the {config.num_classes} classes of the saved model {model_path}: use a model trained on these "
                   f"classes, or --train" if model_path else
                   f"--num-classes {config.num_classes}: raise --num-classes to {top + 1} or fix the labels")
            raise UserError(f"the {name} part has label {top}, not below {fix}")
    empty = ImageSet(torch.empty((0, *config.input_dim), dtype=torch.uint8), torch.empty(0, dtype=torch.int64))
    train, val = parts["train"].split(config.val_size, config.seed, config.train_size) if need_train else (empty, empty)
    test_idx, _ = stratified_pick(parts["test"].labels, _count(config.test_size, len(parts["test"]), "--test-size",
                                                              "test images"), config.seed)
    return Splits(train, val, parts["test"].subset(test_idx), config.num_classes)
