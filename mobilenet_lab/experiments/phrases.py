"""The phrases of the report's sentences: how one number stands to another (ahead, level, behind) and the words
for counts, lists, digits and mistakes, each true for any outcome. No results are read here: writing.py passes the
numbers in."""
import numpy as np

from .facts import digits, pct


def compare(a: float, b: float, band: tuple[float, float] | None, n: int) -> str:
    """How ``a`` stands to ``b``: "ahead", "behind" or "level". With a seed band of ``b`` (its lowest and highest over
    seeds), "level" means inside the band; without one, within one image of ``n``."""
    low, high = band if band else (b - 1 / n, b + 1 / n)
    return "ahead" if a > high else "behind" if a < low else "level"


def ranking(a_name: str, a: float, b_name: str, b: float, band, n: int, what: str = "test accuracy") -> str:
    """One sentence saying how network ``a`` compares with ``b`` on ``what``, true for any outcome."""
    gap = abs(digits(a - b, n))
    side = compare(a, b, band, n)
    seeds = f" (outside {b_name}'s spread over seeds, {pct(band[0])} to {pct(band[1])})" if band else ""
    within = f", within {b_name}'s spread over seeds ({pct(band[0])} to {pct(band[1])})" if band else ""
    if side == "ahead":
        return f"{a_name} is ahead of {b_name} in {what}: {pct(a)} against {pct(b)}, {gap} more of {n:,} right{seeds}."
    if side == "behind":
        return f"{a_name} is behind {b_name} in {what}: {pct(a)} against {pct(b)}, {gap} fewer of {n:,} right{seeds}."
    return f"{a_name} and {b_name} are level in {what}: {pct(a)} against {pct(b)}{within}."


def plural(n: int, word: str, many: str | None = None) -> str:
    """"1 seed", "2 seeds"."""
    return f"{n:,} {word if n == 1 else many or word + 's'}"


def listed(items: list[str]) -> str:
    """"a", "a and b", "a, b and c"."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def extremes(counts: list[int]) -> tuple[list[int], list[int]]:
    """The classes with the most and with the fewest images, ties included."""
    return ([i for i, c in enumerate(counts) if c == max(counts)], [i for i, c in enumerate(counts) if c == min(counts)])


def digit_names(classes: list[int]) -> str:
    return ("digit " if len(classes) == 1 else "digits ") + listed([str(c) for c in classes])


def first_epoch(history: dict, at_least: float) -> int | None:
    return next((e for e, acc in zip(history["epoch"], history["val_acc"]) if acc >= at_least), None)


def mistakes(confusion: list[list[int]]) -> str:
    """The most frequent confusions, ties named as ties."""
    cm = np.array(confusion)
    off = [(int(cm[t, p]), t, p) for t in range(len(cm)) for p in range(len(cm)) if t != p and cm[t, p]]
    if not off:
        return "it made no mistake"
    top = max(c for c, _, _ in off)
    tied = [(t, p) for c, t, p in off if c == top]
    if len(tied) == 1:
        t, p = tied[0]
        second = sorted((c for c, _, _ in off), reverse=True)[1:2]
        rest = f"; the next most frequent occurs {plural(second[0], 'time')}" if second else ""
        return f"its most frequent mistake is {t} read as {p} ({plural(top, 'time')}){rest}"
    pairs = ", ".join(f"{t} as {p}" for t, p in tied[:4]) + (" and more" if len(tied) > 4 else "")
    return f"no single mistake stands out: {len(tied)} confusions ({pairs}) each occur {plural(top, 'time')}"


def times(a_name: str, a: float, b_name: str, b: float, what: str, unit: str, fmt: str = ".0f") -> str:
    """"X's time per epoch is 1.42 times Y's (15 s against 11 s)", the larger one first."""
    if a < b:
        a_name, a, b_name, b = b_name, b, a_name, a
    return f"{a_name}'s {what} is {a / b:.2f} times {b_name}'s ({a:{fmt}} {unit} against {b:{fmt}} {unit})"


def against_band(score: float, band: tuple | None) -> str:
    """Where a score lies against the baseline's seed band, with the band's range."""
    if band is None:
        return "(the baseline has one seed, so no seed band to compare with)"
    low, high, seeds = band
    where = "above" if score > high else "inside" if score >= low else "below"
    return f"{where} the baseline's seed band ({pct(low)} to {pct(high)} over {plural(len(seeds), 'seed')})"
