"""Every setting of a run in one dataclass: its default, its help text and its allowed range.

The defaults are the recipe the saved models were trained with. The root script's flags are made from these fields
(``add_flags``), a checkpoint stores them (``as_dict``), ``--resume`` reads them back (``from_dict``), and the report,
the benchmark and the seeds study vary a run by overriding some of them (``dataclasses.replace``). ``validate`` is the
only range check; it runs whenever a Config is made, so code below the command line never checks a setting again."""
import argparse
import math
from dataclasses import asdict, dataclass, field, fields

from .errors import UserError

PRESETS = {"mobilenet": (1, 6), "conv4": (4, 0)}  # the assignment's two architectures: (conv, ConvDw) blocks
OPTIMIZERS = {"adamw": "AdamW", "adam": "Adam", "sgd": "SGD with Nesterov momentum"}
LOSSES = ("ce", "weighted-ce", "balanced-softmax", "label-smoothing", "focal")
BALANCING = ("none", "sampler")
KEEP = ("last", "best")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16")
MAX_SIDE, MAX_BLOCKS, MAX_CLASSES = 1024, 64, 1000
RETIRED = {"erase": 0.0}  # measured, never kept, removed: older files that did not use it still load


class SettingError(UserError):
    """A setting outside its range; ``flag`` is the message with the command-line spelling."""

    def __init__(self, name: str, text: str):
        super().__init__(f"{name} {text}")
        self.flag = f"--{name.replace('_', '-')} {text}"


def setting(default, help: str, group: str = "training", *, low=None, high=None, rule: str = "", example="",
            zero: str = "", choices: tuple = (), metavar: str | None = None, none: str = "all"):
    """A field with its flag's help and its range: ``low <= value <= high`` (``high`` exclusive when
    ``rule`` says "below"), or one of ``choices``; ``zero`` says what 0 means, ``none`` what None means."""
    meta = dict(help=help, group=group, low=low, high=high, rule=rule, example=example, zero=zero,
                choices=choices, metavar=metavar, none=none)
    return field(default=default, metadata=meta)


def parse_size(text, name: str = "size"):
    """A split size: None (all), a count (int >= 1) or a fraction (float in (0, 1])."""
    if text is None or text == "all":
        return None
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = text
    else:
        try:
            value = float(text) if any(c in str(text) for c in ".eE") else int(text)
        except ValueError:
            raise UserError(f"{name} {text} is neither a count nor a fraction: use e.g. 5000 or 0.2") from None
    if not value > 0:
        raise UserError(f"{name} {text} must be positive: use a count like 5000 or a fraction like 0.2")
    if isinstance(value, float) and value > 1:
        raise UserError(f"{name} {text} is a fraction above 1: use a fraction up to 1.0 or a whole count")
    return value


def parse_input_dim(text, name: str = "input_dim") -> tuple[int, int, int]:
    parts = [p for p in str(text).replace("x", ",").replace(" ", ",").strip("()[]").split(",") if p]
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if len(dims) != 3 or min(dims) < 1:
        raise UserError(f"{name} {text} is not three positive integers C,H,W: use e.g. 1,28,28")
    return dims


@dataclass(frozen=True)
class Config:
    # data: the validation split comes from the train part, stratified and seeded
    train_size: int | float | None = setting(
        None, "training images: a count or a fraction of what is left after validation (default: all)",
        "data", metavar="N|FRAC")
    val_size: int | float | None = setting(
        None, "validation images taken (stratified) from the train part: a count or a fraction (default: "
              "2%%, at least 300 images and at most a fifth of the part)", "data", metavar="N|FRAC",
        none="2%, at least 300 and at most a fifth of the train part")
    test_size: int | float | None = setting(
        None, "test images: a count or a fraction of the test part (default: all)", "data", metavar="N|FRAC")
    input_dim: tuple[int, int, int] = setting(
        (1, 28, 28), "image shape the network takes; images are converted to it (default: 1,28,28)", "data",
        metavar="C,H,W")
    num_classes: int = setting(10, "number of classes (default: 10)", "data", low=2, high=MAX_CLASSES,
                               rule=f"between 2 and {MAX_CLASSES} (a classifier needs at least two classes)", example=10,
                               metavar="N")
    # model: input -> conv blocks -> ConvDw blocks -> global average pooling -> fc
    arch: str = setting("mobilenet", "architecture preset: mobilenet (a conv stem + 6 ConvDw blocks) or conv4 "
                                     "(4 conv blocks) (default: mobilenet)", "model", choices=tuple(PRESETS),
                        metavar="PRESET")
    conv_blocks: int | None = setting(None, "conv_block_count: standard 3x3 conv blocks (default: the preset's)",
                                      "model", low=0, high=MAX_BLOCKS, rule=f"between 0 and {MAX_BLOCKS}",
                                      example=1, metavar="N")
    mobilenet_blocks: int | None = setting(None, "mobilenet_block_count: ConvDw blocks (default: the preset's)",
                                           "model", low=0, high=MAX_BLOCKS, rule=f"between 0 and {MAX_BLOCKS}",
                                           example=6, metavar="N")
    # training: one-cycle schedule, weight average, batched augmentation
    epochs: int = setting(20, "training epochs (default: 20)", low=1, high=10_000,
                          rule="between 1 and 10000", example=20, metavar="N")
    learning_rate: float = setting(3e-3, "peak learning rate of the one-cycle schedule (default: 0.003)",
                                   low=0, high=1e6, rule="a positive number up to 1e6", example=0.003, metavar="LR")
    batch_size: int = setting(128, "images per training step (default: 128)", low=1, high=8192,
                              rule="between 1 and 8192", example=128, metavar="N")
    optimizer: str = setting("adamw", "adamw, adam or sgd (default: adamw)", choices=tuple(OPTIMIZERS),
                             metavar="NAME")
    loss: str = setting("balanced-softmax", "ce, weighted-ce, balanced-softmax, label-smoothing or focal "
                                            "(default: balanced-softmax)", choices=LOSSES, metavar="NAME")
    balance: str = setting("none", "class-imbalance handling besides the loss: none, or sampler (class-balanced batches) (default: none)",
                           choices=BALANCING, metavar="HOW")
    weight_decay: float = setting(5e-4, "weight decay of AdamW and SGD (default: 0.0005)", low=0, high=1,
                                  rule="between 0 and 1", example=0.0005, metavar="WD")
    average_decay: float = setting(
        0.999, "keep an exponential moving average of the weights with this decay at most (it warms up as "
               "(1+n)/(10+n) after n steps); validation and the saved model use the average; 0 turns it off "
               "(default: 0.999)", low=0, high=1, rule="at least 0 and below 1", example=0.999,
        zero="turns weight averaging off", metavar="DECAY")
    keep: str = setting("last", "which epoch's weights to keep: last, or best (the best validation accuracy, "
                                "the latest among equals) (default: last)", choices=KEEP, metavar="WHICH")
    augment: bool = setting(True, "turn off the random rotation, shift, scale, shear and elastic distortion of "
                                  "training images (default: on)")
    degrees: float = setting(10.0, "largest random rotation in degrees (default: 10)", low=0, high=90,
                             rule="between 0 and 90 degrees", example=10, zero="rotates nothing", metavar="DEG")
    translate: float = setting(0.1, "largest random shift, as a share of the image side (default: 0.1)",
                               low=0, high=0.5, rule="a share of the image side between 0 and 0.5", example=0.1,
                               zero="shifts nothing", metavar="SHARE")
    scale: float = setting(0.1, "largest random change of size, as a share (default: 0.1)", low=0, high=0.5,
                           rule="a share of the size between 0 and 0.5", example=0.1, zero="keeps the size",
                           metavar="SHARE")
    shear: float = setting(15.0, "largest random slant in degrees, as in slanted handwriting (default: 15)",
                           low=0, high=45, rule="between 0 and 45 degrees", example=15, zero="slants nothing",
                           metavar="DEG")
    elastic: float = setting(1.5, "bend each training image by a smooth random field of up to PX pixels "
                                  "(elastic distortion) (default: 1.5)", low=0, high=4,
                             rule="between 0 and 4 pixels", example=1.5, zero="keeps the augmentation affine",
                             metavar="PX")
    seed: int = setting(0, "random seed for splits, weights and batches (default: 0)", low=0, high=2**32 - 1,
                        rule="between 0 and 4294967295", example=0, metavar="N")
    device: str = setting("auto", "auto, cpu, cuda or mps; auto picks CUDA or MPS when present (default: auto)",
                          choices=DEVICES, metavar="NAME")
    precision: str = setting("auto", "fp32, bf16 (bfloat16 autocast for training; evaluation stays float32), or "
                                     "auto: bf16 where it was measured to pay, networks of plain conv blocks on a CPU "
                                     "with bfloat16 instructions, else fp32 (default: auto)",
                             choices=PRECISIONS, metavar="NAME")

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise SettingError for the first setting outside its range (NaN is outside every range)."""
        for f in fields(self):
            value, meta = getattr(self, f.name), f.metadata
            if meta["choices"] and value not in meta["choices"]:
                raise SettingError(f.name, f"'{value}' is not known: choose one of {', '.join(meta['choices'])}")
            if meta["low"] is None or value is None:
                continue
            integer = f.default is None or isinstance(f.default, int)  # the block counts default to None
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
                raise SettingError(f.name, f"{value!r} is not a number: use e.g. {meta['example']}")
            low_ok = value > meta["low"] if meta["rule"].startswith("a positive") else value >= meta["low"]
            high_ok = value < meta["high"] if "below" in meta["rule"] else value <= meta["high"]
            if not (math.isfinite(value) and low_ok and high_ok):
                zero = f" (0 {meta['zero']})" if meta["zero"] else ""
                raise SettingError(f.name, f"{value:g} must be {meta['rule']}, e.g. {meta['example']}{zero}")
        for name in ("train_size", "val_size", "test_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise SettingError(name, f"{value!r} is not a count or a fraction: use e.g. 5000 or 0.2")
            parse_size(value, name)
        channels, height, width = parse_input_dim(self.input_dim)
        if channels not in (1, 3) or max(height, width) > MAX_SIDE:
            raise SettingError("input_dim", f"{','.join(map(str, self.input_dim))} must have 1 (grayscale) or 3 "
                                            f"(RGB) channels and sides up to {MAX_SIDE}, e.g. 1,28,28")
        if sum(self.block_counts) < 1:
            raise SettingError("conv_blocks", f"{self.block_counts[0]} with --mobilenet-blocks "
                                              f"{self.block_counts[1]}: at least one block is needed")

    @property
    def block_counts(self) -> tuple[int, int]:
        """(conv_block_count, mobilenet_block_count): the preset's, unless given."""
        conv, mobile = PRESETS[self.arch]
        return (conv if self.conv_blocks is None else self.conv_blocks,
                mobile if self.mobilenet_blocks is None else self.mobilenet_blocks)

    @property
    def preset(self) -> str:
        """The preset these block counts are, or "custom"."""
        return next((name for name, counts in PRESETS.items() if counts == self.block_counts), "custom")

    def as_dict(self) -> dict:
        d = asdict(self)
        d["input_dim"] = list(self.input_dim)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        """A Config from ``as_dict``'s output; names it does not know are refused."""
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if RETIRED.get(k, object()) != v}  # a retired setting left at its off value
        unknown = sorted(set(d) - known)
        if unknown:
            raise UserError(f"unknown settings {', '.join(unknown)}: the file was written by another version")
        values = dict(d)
        if "input_dim" in values:
            values["input_dim"] = parse_input_dim(",".join(map(str, values["input_dim"])))
        return cls(**values)

    def table(self, groups: tuple[str, ...] = ("data", "model", "training")) -> str:
        """The settings of ``groups``, one per line, aligned."""
        shown = {f.name: f.metadata["none"] if getattr(self, f.name) is None else getattr(self, f.name)
                 for f in fields(self) if f.metadata["group"] in groups}
        if "model" in groups:
            shown.update(conv_blocks=self.block_counts[0], mobilenet_blocks=self.block_counts[1],
                         arch=self.preset)
        width = max(map(len, shown))
        return "\n".join(f"  {k:<{width}}  {v}" for k, v in shown.items())


def add_flags(parser: argparse.ArgumentParser, groups: dict) -> None:
    """One flag per Config field, in the argument ``groups`` by name (made when missing); a flag not given stays out of
    the namespace, so ``from_flags`` knows which settings the user chose."""
    for f in fields(Config):
        meta = f.metadata
        group = groups.get(meta["group"]) or groups.setdefault(meta["group"], parser.add_argument_group(meta["group"]))
        if f.name == "augment":
            group.add_argument("--no-augment", dest="augment", action="store_false", default=argparse.SUPPRESS,
                               help=meta["help"])
            continue
        kind = {int: int, float: float}.get(type(f.default) if f.default is not None else int, str)
        if f.name in ("train_size", "val_size", "test_size", "input_dim"):
            kind = str
        group.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, metavar=meta["metavar"], type=kind,
                           default=argparse.SUPPRESS, choices=meta["choices"] or None, help=meta["help"])


def from_flags(args: argparse.Namespace, base: Config | None = None) -> tuple[Config, set[str]]:
    """The Config the flags ask for (over ``base``, default: the recipe) and the names given."""
    names = {f.name for f in fields(Config)}
    given = {k: v for k, v in vars(args).items() if k in names}
    try:
        for name in ("train_size", "val_size", "test_size"):
            if name in given:
                given[name] = parse_size(given[name], f"--{name.replace('_', '-')}")
        if "input_dim" in given:
            given["input_dim"] = parse_input_dim(given["input_dim"], "--input-dim")
        values = dict((base or Config()).as_dict(), **given)
        values["input_dim"] = tuple(values["input_dim"])
        return Config(**values), set(given)
    except SettingError as exc:
        raise UserError(exc.flag) from None
