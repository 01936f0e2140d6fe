"""Config validation with one-line messages that name the key, value and fix.

The Snakefile calls :func:`validate_config` at parse time, so a bad config
stops the run before any job starts.  jsonschema's own messages dump the whole
sub-document; ours say ``key: problem; allowed: ...`` on one line.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml


class ConfigError(ValueError):
    """The config cannot run; the message is one line naming the key or file."""


def load_schema(path: str | os.PathLike) -> dict:
    with open(path) as handle:
        return yaml.safe_load(handle)


def _key(path: Iterable[Any]) -> str:
    parts = [str(p) for p in path]
    return ".".join(parts) if parts else "<top level>"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_error(error: jsonschema.ValidationError) -> str:
    """One line: which key, what value, what is allowed."""
    key = _key(error.absolute_path)
    kind, expected, value = error.validator, error.validator_value, error.instance
    if kind == "enum":
        allowed = ", ".join(map(str, expected))
        return f"config key '{key}' = {_short(value)} is not allowed; use one of: {allowed}"
    if kind == "type":
        want = expected if isinstance(expected, str) else " or ".join(expected)
        return (
            f"config key '{key}' = {_short(value)} has type {type(value).__name__}; expected {want}"
        )
    if kind == "required":
        missing = [name for name in expected if name not in value]
        prefix = f"{key}." if error.absolute_path else ""
        return f"config key '{prefix}{missing[0]}' is required but missing"
    if kind == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(value) - set(allowed))
        prefix = f"{key}." if error.absolute_path else ""
        return (
            f"config key '{prefix}{extra[0]}' is not a known setting; "
            f"known keys here: {', '.join(allowed)}"
        )
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        relation = {
            "minimum": ">=",
            "maximum": "<=",
            "exclusiveMinimum": ">",
            "exclusiveMaximum": "<",
        }[kind]
        return f"config key '{key}' = {_short(value)} must be {relation} {expected}"
    if kind in ("minItems", "maxItems", "minLength", "pattern", "uniqueItems"):
        return f"config key '{key}' = {_short(value)} fails '{kind}: {expected}'"
    return f"config key '{key}' = {_short(value)}: {error.message.splitlines()[0]}"


def validate_config(config: dict, schema: Mapping) -> dict:
    """Check ``config`` against ``schema``; defaults are filled afterwards by
    ``snakemake.utils.validate`` in the Snakefile.

    Raises :class:`ConfigError` with a one-line message for the first problem
    (the deepest, most specific one jsonschema finds).
    """
    validator_class = jsonschema.validators.validator_for(schema)
    validator = validator_class(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        raise ConfigError(describe_error(error))
    return config


def check_input_paths(pairs: Iterable[tuple[str, str]]) -> None:
    """Every configured input file must exist before the DAG is built.

    ``pairs`` are (config key, path) for each file the enabled workflows read.
    """
    for key, raw in pairs:
        path = Path(os.path.expanduser(str(raw)))
        if not path.exists():
            raise ConfigError(
                f"config key '{key}': input file '{raw}' does not exist; "
                "fix the path (relative paths start at the working directory)"
            )
