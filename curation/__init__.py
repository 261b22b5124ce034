"""The curation job: long videos → clips → shots → Parquet manifests (see curation/run.py)."""
