"""Named model sizes: each model module keeps a table {name: config} and looks names up here."""

from typing import Mapping, Tuple, TypeVar

Config = TypeVar("Config")


def names(table: Mapping[str, Config]) -> Tuple[str, ...]:
    """The preset names of a table, sorted (for flag choices)."""
    return tuple(sorted(table))


def lookup(table: Mapping[str, Config], name: str, model: str) -> Config:
    """The config called `name` in `table`; a ValueError naming the choices otherwise."""
    if name not in table:
        raise ValueError(f"unknown {model} preset {name!r}; choose one of "
                         f"{', '.join(names(table))}.")
    return table[name]
