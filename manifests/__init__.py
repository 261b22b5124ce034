"""Dataset layer: manifest schemas, validated table IO and reading a shot's frames.

import pandas as pd
shots = pd.read_parquet("DIR/shots.parquet")          # plain pandas
from manifests import read_table
shots = read_table("DIR", "shots")                    # validated against the schema
"""

from manifests.frames import read_shot_frames
from manifests.io import ManifestError, read_table, write_part
from manifests.schema import SCHEMA_VERSION, TABLES

__all__ = ["ManifestError", "read_table", "write_part", "read_shot_frames", "SCHEMA_VERSION", "TABLES"]
