"""Every setting of a run in one dataclass, each with its default (the saved models' recipe), help text and range. The
flags are made from it (``add_flags``), a checkpoint stores it (``as_dict``), and ``validate``, the only range check,
runs whenever a Config is made: code below the command line never checks a setting again."""
import argparse
import math
from dataclasses import asdict, dataclass, field, fields

from .errors import UserError

ARCHS = {"mobilenet": (1, 6), "conv4": (4, 0)}  # the assignment's two architectures: (conv, ConvDw) blocks
OPTIMIZERS = ("adamw", "adam", "sgd")
LOSSES = ("ce", "weighted-ce", "balanced-softmax", "label-smoothing")
BALANCING = ("none", "sampler")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("fp32", "bf16")
SIZES = ("train_size", "val_size", "test_size")
MAX_SIDE = 1024


class SettingError(UserError):
    """A setting outside its range; ``flag`` is the message with the command-line spelling."""

    def __init__(self, name: str, text: str):
        super().__init__(f"{name} {text}")
        self.flag = f"--{name.replace('_', '-')} {text}"


def setting(default, help: str, group: str = "training", *, low=None, high=None, rule: str = "", open_low=False,
            open_high=False, zero: str = "", choices: tuple = (), metavar: str = "N", none: str = "all"):
    """A field with its flag's help and its range: ``low <= value <= high`` (strict where ``open_low`` or
    ``open_high``), said in words by ``rule``; or one of ``choices``. ``zero`` says what 0 means, ``none`` what None
    means."""
    meta = dict(help=help, group=group, low=low, high=high, rule=rule, open_low=open_low, open_high=open_high,
                zero=zero, choices=choices, metavar=metavar, none=none)
    return field(default=default, metadata=meta)


def parse_size(text, name: str = "size"):
    """A split size: None or "all" (all), a count (int >= 1) or a fraction (float in (0, 1])."""
    if text is None or text == "all":
        return None
    try:
        value = text if isinstance(text, (int, float)) else float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        raise UserError(f"{name} {text} is neither a count nor a fraction: use e.g. 5000 or 0.2") from None
    if not value > 0 or (isinstance(value, float) and value > 1):
        raise UserError(f"{name} {text} must be a positive count like 5000 or a fraction up to 1 like 0.2")
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
    train_size: int | float | None = setting(None, "training images: a count, or a share of what validation leaves",
                                             "data", metavar="N|FRAC")
    val_size: int | float | None = setting(None, "validation images from the train part: a count or a share", "data",
                                           metavar="N|FRAC", none="2%, at least 300 and at most a fifth of the part")
    test_size: int | float | None = setting(None, "test images: a count or a share", "data", metavar="N|FRAC")
    input_dim: tuple[int, int, int] = setting((1, 28, 28), "image shape the network takes", "data", metavar="C,H,W")
    num_classes: int = setting(10, "number of classes", "data", low=2, high=1000, rule="between 2 and 1000")
    # model: input -> conv blocks -> ConvDw blocks -> global average pooling -> fc
    conv_block_count: int = setting(1, "standard 3x3 conv blocks", "model", low=0, high=64, rule="between 0 and 64")
    mobilenet_block_count: int = setting(6, "MobileNet (ConvDw) blocks after them", "model", low=0, high=64,
                                         rule="between 0 and 64")
    # training: the assignment's four arguments of train() first, then the rest of the recipe
    learning_rate: float = setting(3e-3, "peak of the one-cycle schedule", low=0, high=1e6, open_low=True,
                                   rule="a positive number up to 1e6", metavar="LR")
    epochs: int = setting(20, "training epochs", low=1, high=10_000, rule="between 1 and 10000")
    loss: str = setting("balanced-softmax", "the loss function", choices=LOSSES, metavar="NAME")
    optimizer: str = setting("adamw", "the optimiser (sgd: with Nesterov momentum)", choices=OPTIMIZERS, metavar="NAME")
    batch_size: int = setting(128, "images per training step", low=1, high=8192, rule="between 1 and 8192")
    weight_decay: float = setting(5e-4, "of AdamW and SGD", low=0, high=1, rule="between 0 and 1", metavar="WD")
    balance: str = setting("none", "sampler draws class-balanced batches", choices=BALANCING, metavar="HOW")
    average_decay: float = setting(0.999, "decay of the weights' moving average, warmed up as (1+n)/(10+n)", low=0,
                                   high=1, open_high=True, rule="at least 0 and below 1", zero="turns it off",
                                   metavar="DECAY")
    augment: bool = setting(True, "turn off the random rotation, shift, scale, shear and bend of training images")
    degrees: float = setting(10.0, "largest random rotation", low=0, high=90, rule="between 0 and 90 degrees",
                             zero="rotates nothing", metavar="DEG")
    translate: float = setting(0.1, "largest random shift, as a share of the side", low=0, high=0.5,
                               rule="a share between 0 and 0.5", zero="shifts nothing", metavar="SHARE")
    scale: float = setting(0.1, "largest random change of size, as a share", low=0, high=0.5,
                           rule="a share between 0 and 0.5", zero="keeps the size", metavar="SHARE")
    shear: float = setting(15.0, "largest random slant, as in slanted handwriting", low=0, high=45,
                           rule="between 0 and 45 degrees", zero="slants nothing", metavar="DEG")
    elastic: float = setting(1.5, "largest smooth random bend of an image", low=0, high=4,
                             rule="between 0 and 4 pixels", zero="keeps the augmentation affine", metavar="PX")
    seed: int = setting(0, "random seed of the split, the weights and the batches", low=0, high=2**32 - 1,
                        rule="between 0 and 4294967295")
    device: str = setting("auto", "auto picks the GPU when there is one", choices=DEVICES, metavar="NAME")
    precision: str = setting("fp32", "bf16 trains in bfloat16 autocast (faster for conv blocks on CPUs with bfloat16 "
                                     "instructions)", choices=PRECISIONS, metavar="NAME")

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise SettingError for the first setting outside its range (NaN is outside every range)."""
        for f in fields(self):
            value, meta = getattr(self, f.name), f.metadata
            if meta["choices"] and value not in meta["choices"]:
                raise SettingError(f.name, f"'{value}' is not known: choose one of {', '.join(meta['choices'])}")
            if meta["low"] is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                    isinstance(f.default, int) and not isinstance(value, int)):
                raise SettingError(f.name, f"{value!r} is not a number: use e.g. {f.default:g}")
            low_ok = value > meta["low"] if meta["open_low"] else value >= meta["low"]
            high_ok = value < meta["high"] if meta["open_high"] else value <= meta["high"]
            if not (math.isfinite(value) and low_ok and high_ok):
                zero = f" (0 {meta['zero']})" if meta["zero"] else ""
                raise SettingError(f.name, f"{value:g} must be {meta['rule']}, e.g. {f.default:g}{zero}")
        for name in SIZES:
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise SettingError(name, f"{value!r} is not a count or a fraction: use e.g. 5000 or 0.2")
            parse_size(value, name)
        channels, height, width = parse_input_dim(self.input_dim)
        if channels not in (1, 3) or max(height, width) > MAX_SIDE:
            raise SettingError("input_dim", f"{','.join(map(str, self.input_dim))} must have 1 (grayscale) or 3 "
                                            f"(RGB) channels and sides up to {MAX_SIDE}, e.g. 1,28,28")
        if self.conv_block_count + self.mobilenet_block_count < 1:
            raise SettingError("conv_block_count", f"{self.conv_block_count} with --mobilenet-block-count "
                                                   f"{self.mobilenet_block_count}: at least one block is needed")

    @property
    def arch(self) -> str:
        """The name of these block counts: mobilenet, conv4, or e.g. c2m4."""
        counts = (self.conv_block_count, self.mobilenet_block_count)
        return next((name for name, known in ARCHS.items() if known == counts), "c{}m{}".format(*counts))

    def as_dict(self) -> dict:
        return dict(asdict(self), input_dim=list(self.input_dim))

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        """A Config from ``as_dict``'s output; names it does not know are refused."""
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise UserError(f"unknown settings {', '.join(unknown)}: the file was written by another version")
        return cls(**{k: tuple(v) if k == "input_dim" else v for k, v in d.items()})

    def table(self, groups: tuple[str, ...] = ("data", "model", "training")) -> str:
        """The settings of ``groups``, one per line, aligned."""
        shown = {f.name: f.metadata["none"] if getattr(self, f.name) is None else getattr(self, f.name)
                 for f in fields(self) if f.metadata["group"] in groups}
        if "model" in groups:
            shown["arch"] = self.arch
        width = max(map(len, shown))
        return "\n".join(f"  {k:<{width}}  {v}" for k, v in shown.items())


def add_flags(parser: argparse.ArgumentParser, groups: dict) -> None:
    """One flag per Config field (and --arch), in the argument ``groups`` by name (made when missing); a flag not given
    stays out of the namespace, so ``from_flags`` knows which settings the user chose."""
    def group(name: str):
        return groups.get(name) or groups.setdefault(name, parser.add_argument_group(name))

    group("model").add_argument("--arch", choices=tuple(ARCHS), default=argparse.SUPPRESS,
                                help="the assignment's two architectures: mobilenet (1 conv + 6 ConvDw blocks) or "
                                     "conv4 (4 conv blocks); sets both block counts (default: mobilenet)")
    for f in fields(Config):
        meta = f.metadata
        if f.name == "augment":
            group(meta["group"]).add_argument("--no-augment", dest="augment", action="store_false",
                                              default=argparse.SUPPRESS, help=meta["help"] + " (default: on)")
            continue
        kind = str if f.name in (*SIZES, "input_dim") else {int: int, float: float}.get(type(f.default), str)
        default = meta["none"] if f.default is None else ",".join(map(str, f.default)) if f.name == "input_dim" \
            else f"{f.default:g}" if isinstance(f.default, float) else f.default
        choices = f"{', '.join(meta['choices'][:-1])} or {meta['choices'][-1]}; " if meta["choices"] else ""
        group(meta["group"]).add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, metavar=meta["metavar"],
                                          type=kind, default=argparse.SUPPRESS, choices=meta["choices"] or None,
                                          help=f"{choices}{meta['help']} (default: {default})".replace("%", "%%"))


def from_flags(args: argparse.Namespace, base: Config | None = None) -> tuple[Config, set[str]]:
    """The Config the flags ask for (over ``base``, default: the recipe) and the names of the settings given;
    ``--arch`` stands for its two block counts."""
    names = {f.name for f in fields(Config)}
    given = {k: v for k, v in vars(args).items() if k in names}
    arch = getattr(args, "arch", None)
    if arch is not None:
        for name, count in zip(("conv_block_count", "mobilenet_block_count"), ARCHS[arch]):
            if given.get(name, count) != count:
                flag = "--" + name.replace("_", "-")
                raise UserError(f"--arch {arch} has {count} {name.split('_')[0]} blocks, not {flag} {given[name]}: "
                                f"drop one of the two")
            given[name] = count
    try:
        for name in SIZES:
            if name in given:
                given[name] = parse_size(given[name], f"--{name.replace('_', '-')}")
        if "input_dim" in given:
            given["input_dim"] = parse_input_dim(given["input_dim"], "--input-dim")
        values = dict((base or Config()).as_dict(), **given)
        values["input_dim"] = tuple(values["input_dim"])
        return Config(**values), set(given)
    except SettingError as exc:
        raise UserError(exc.flag) from None
