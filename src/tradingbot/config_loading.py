"""Loading a run configuration: YAML, then ``--set a.b=value`` overrides, then validation of
the whole tree into a :class:`~tradingbot.config.TradingConfig`; unknown keys and bad values
raise :class:`~tradingbot.errors.ConfigError` naming the key and what is allowed. (Re-exported
by :mod:`tradingbot.config`.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from tradingbot.config import TradingConfig
from tradingbot.errors import ConfigError, short_repr, short_text
from tradingbot.safe_yaml import MAX_CONFIG_BYTES, load_yaml


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names of the sub-model reached by following ``loc`` from ``model``."""
    current: Any = model
    for part in loc:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            break
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            break
        current = nested[0]
    return sorted(getattr(current, "model_fields", {}))


def _format_validation_error(err: ValidationError, model: type[BaseModel], origin: str) -> str:
    lines = []
    for item in err.errors():
        loc = tuple(item["loc"])
        key = ".".join(str(p) for p in loc) or "<root>"
        if item["type"] == "extra_forbidden":
            allowed = ", ".join(_allowed_keys(model, loc[:-1]))
            lines.append(f"{key}: unknown key; allowed keys here: {allowed}")
        else:
            lines.append(f"{key}: {item['msg']} (got {short_repr(item.get('input'))})")
    return f"invalid configuration ({origin}):\n  " + "\n  ".join(lines)


def validate_config(raw: dict[str, Any], origin: str = "config") -> TradingConfig:
    """Validate a nested dict into a :class:`TradingConfig`, raising :class:`ConfigError`."""
    try:
        return TradingConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, TradingConfig, origin)) from None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML config file (size-checked before it is read)."""
    path = Path(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "not found"
        raise ConfigError(f"config file {what}: {path}")
    if path.suffix.lower() in (".csv", ".parquet", ".pq"):
        raise ConfigError(f"{path}: a data file, not a YAML config; give data with --data")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: {size} bytes is too large for a config (a YAML file)")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {err.start})") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror})") from None
    loaded = load_yaml(text, str(path))
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(loaded).__name__}")
    return loaded or {}


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value``; the value is read as YAML (``3``, ``1e-4``, ``true``, ``[1, 2]``)."""
    if "=" not in text:
        raise ConfigError(f"override {short_repr(text)} must look like key.path=value")
    key, value = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"override {short_repr(text)} has an empty key")
    origin = f"--set {short_text(key.strip())}"
    return path, load_yaml(value, origin) if value.strip() else None


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each ``a.b=value`` in a copy of ``raw``; unknown keys are caught by validation."""
    result = json.loads(json.dumps(raw, default=str))
    for text in overrides:
        path, value = parse_override(text)
        node = result
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(
                    f"override {short_repr(text)}: {short_repr(part)} is a value, not a section"
                )
            node = child
        node[path[-1]] = value
    return result


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> TradingConfig:
    """Load a YAML config (or the defaults when ``path`` is None) and apply overrides."""
    raw: dict[str, Any] = {}
    origin = "defaults"
    if path is not None:
        raw = read_config_file(path)
        origin = str(path)
    if overrides:
        raw = apply_overrides(raw, overrides)
        origin += " with --set " + short_text(" ".join(overrides), 300)
    return validate_config(raw, origin)


def dump_config(config: TradingConfig) -> str:
    """The resolved config as YAML."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
