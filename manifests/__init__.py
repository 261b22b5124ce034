"""Dataset layer: manifest schemas, validated table IO and reading a shot's frames.

import pandas as pd
shots = pd.read_parquet("DIR/shots.parquet")          # plain pandas
from manifests import read_table
shots = read_table("DIR", "shots")                    # validated against the schema

Names are imported on first use: a Ray worker that only reads frames never imports pandas.
"""

from importlib import import_module


def lazy_names(package: str, homes: dict[str, str]):
    """A module `__getattr__` that imports each public name from its home module on first use."""

    def __getattr__(name: str):
        if name in homes:
            return getattr(import_module(homes[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


_HOMES = {
    "ManifestError": "manifests.io",
    "read_table": "manifests.io",
    "write_part": "manifests.io",
    "read_shot_frames": "manifests.frames",
    "SCHEMA_VERSION": "manifests.schema",
    "TABLES": "manifests.schema",
}
__all__ = sorted(_HOMES)
__getattr__ = lazy_names("manifests", _HOMES)
