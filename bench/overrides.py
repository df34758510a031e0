"""Rules for some of a suite's runs: `match: {AXIS: value or [values]}`, read and matched one way for the
suite's `overrides:` (settings) and its `regression: overrides:` (thresholds, bench/compare.py)."""
from __future__ import annotations

from .settings import DEFAULTS, SETTINGS, axis_value, check_settings


def parse_match(c, path: tuple, raw, swept: dict[str, list], what: str,
                settings: dict = DEFAULTS) -> dict[str, list] | None:
    """A rule's `match:` as axis -> the values it names, each one the matrix sweeps (`swept`); None when it has
    errors, since a rule whose match was dropped would apply to every run. A swept head is merged onto
    `settings`' head, as the matrix merged it."""
    before = len(c.errors)
    match = {}
    for axis, v in c.mapping(raw, path, set(swept)).items():
        if axis not in swept:
            continue
        names = v if isinstance(v, list) else [v]
        try:
            names = [axis_value(axis, n, settings) for n in names] if axis in SETTINGS else names
        except ValueError as e:
            c.error(path + (axis,), str(e))
            continue
        for n in names:
            if n not in swept[axis]:
                c.error(path + (axis,), f"'{n}' is not in matrix.{axis} "
                        f"({', '.join(map(str, swept[axis])) or 'empty'}): this {what} would never apply")
        match[axis] = [n for n in names if n in swept[axis]]
    return match if len(c.errors) == before else None


def matches(match: dict[str, list], run: dict) -> bool:
    """Whether a rule applies to a run. `run` holds the run's axis and setting values, with `mode` the name
    the matrix gives it (a strategy's own name, not its base mode's)."""
    return all(run.get(axis) in names for axis, names in match.items())


def rules(c, data: dict, swept: dict[str, list], settings: dict) -> list[tuple[dict, dict, dict]]:
    """The suite's `overrides:` as (match, settings to set, where each was written), in the file's order."""
    raw = data.get("overrides")
    if raw is None:
        return []
    if not isinstance(raw, list):
        c.error(("overrides",), "expected a list of {match: ..., set: ...}")
        return []
    out = []
    for i, rule in enumerate(raw):
        p = ("overrides", i)
        rule = c.mapping(rule, p, {"match", "set"})
        match = parse_match(c, p + ("match",), rule.get("match"), swept, "override", settings)
        if "set" not in rule:
            c.error(p, "needs 'set': the settings to change")
        values = check_settings(c, rule.get("set"), p + ("set",), DEFAULTS)
        if match is not None:
            out.append((match, values, {k: p + ("set", k) for k in values}))
    return out
