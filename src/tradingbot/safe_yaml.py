"""YAML read safely: PyYAML's SafeLoader (no Python tags), bounded in size before and after
aliases are expanded, errors that name where the text came from and never embed a huge value.
"""

from __future__ import annotations

from typing import Any

import yaml

from tradingbot.errors import ConfigError, short_text

# A config is a few kilobytes; these bounds refuse a YAML alias bomb ("billion laughs") or a
# data file passed as a config before it costs memory or time.
MAX_CONFIG_BYTES = 1 << 20
MAX_YAML_NODES = 100_000  # scalars, sequences and mappings, counted with aliases expanded


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader (no Python tags) that refuses documents too large once aliases are
    expanded, before anything is constructed from them."""

    def compose_document(self) -> Any:
        node = super().compose_document()
        _check_expanded_size(node)
        return node


def _check_expanded_size(root: yaml.Node) -> None:
    """Count ``root``'s nodes as if every alias were copied out; refuse beyond the limit.

    Each distinct node is sized once (aliases share nodes), so the count itself is cheap even
    for an alias bomb that would expand to 10^9 values.
    """
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        known = sizes.get(id(node))
        if known is not None:
            if known < 0:
                raise ConfigError("a YAML alias refers to a node that contains it")
            return known
        sizes[id(node)] = -1
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = node.value
        else:
            children = []
        total = 1 + sum(size(child) for child in children)
        if total > MAX_YAML_NODES:
            raise ConfigError(
                f"the YAML expands to more than {MAX_YAML_NODES} values (aliases counted "
                "expanded); refusing it"
            )
        sizes[id(node)] = total
        return total

    size(root)


def load_yaml(text: str, origin: str) -> Any:
    """Parse one YAML document safely: no Python tags, bounded size after alias expansion.

    Raises :class:`ConfigError` naming ``origin`` (a file, or an override) on any failure.
    """
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{origin}: {len(text)} characters is too large for a config")
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # a SafeLoader: no Python tags
    except ConfigError as err:
        raise ConfigError(f"{origin}: {err}") from None
    except RecursionError:
        raise ConfigError(f"{origin}: the YAML is nested too deeply") from None
    except yaml.YAMLError as err:
        detail = " ".join(str(err).split())
        raise ConfigError(f"{origin}: not valid YAML: {short_text(detail, 300)}") from None
