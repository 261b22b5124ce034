"""The store of precomputed latents and text embeddings (the encoders are the backbone's: `model.encoders`).

Online encoding runs the VAE and text encoder in the training process (fine for small runs). For real runs,
`training/precompute.py` encodes every scene and caption once into sharded safetensors files,
keyed by a hash of what went in (shot, frame window, size, encoder weights), and the trainer reads
them instead: the VAE and T5 then never load during training.

The store may live in an object store (`data.precomputed=s3://bucket/latents`): each shard is then
fetched once, whole, into a local cache (MASK2DIT_CACHE, default ~/.cache/mask2dit) and read from
there, and writers upload each finished shard and index in one piece.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from manifests.io import write_atomic, write_bytes_atomic
from manifests.store import ObjectPath, location
from model.encoders import content_hash


def cache_root() -> Path:
    return Path(os.environ.get("MASK2DIT_CACHE") or Path.home() / ".cache" / "mask2dit")


class LatentStore:
    """Sharded safetensors of precomputed tensors, with an index per writer (rank), and the identity
    of the encoders that wrote them (identity.json), which every key includes."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = location(folder)
        self._index: dict[str, str] | None = None
        self._open: dict[str, object] = {}

    @property
    def identity(self) -> str:
        path = self.folder / "identity.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not a precomputed store (no identity.json); run training/precompute.py")
        return json.loads(path.read_text())["identity"]

    def write_identity(self, identity: str, data_config: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(
            self.folder / "identity.json", json.dumps({"identity": identity, "data": data_config}).encode()
        )

    def index(self) -> dict[str, str]:
        if self._index is None:
            self._index = {}
            for path in sorted(self.folder.glob("index-*.json")):
                self._index.update(json.loads(path.read_text()))
        return self._index

    def __contains__(self, key: str) -> bool:
        return key in self.index()

    def get(self, key: str) -> torch.Tensor:
        from safetensors import safe_open

        shard = self.index().get(key)
        if shard is None:
            raise KeyError(f"{key} is not in the precomputed store {self.folder}; re-run training/precompute.py")
        if shard not in self._open:
            self._open[shard] = safe_open(str(self._local(shard)), "pt")
        return self._open[shard].get_tensor(key)

    def _local(self, shard: str) -> Path:
        """A shard as a local file: itself, or (object store) its copy in the cache, fetched whole once.
        The copy is named after the object's identity (its ETag or size and time), so a store deleted
        and written again under the same names is fetched again, never read stale."""
        source = self.folder / shard
        if not isinstance(source, ObjectPath):
            return source
        digest = hashlib.blake2b(f"{source}|{source.fs.ukey(source.key)}".encode(), digest_size=12).hexdigest()
        target = cache_root() / "latents" / f"{digest}.safetensors"
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".fetch-", dir=target.parent)
            os.close(fd)
            try:
                source.fs.get_file(source.key, tmp)
                os.replace(tmp, target)  # complete or absent, even with many loader workers fetching
            finally:
                Path(tmp).unlink(missing_ok=True)
        return target

    def write(self, tensors: dict[str, torch.Tensor], writer: str, shard_size: int = 256) -> None:
        """Append tensors as new shards of this writer, then update its index (atomically)."""
        from safetensors.torch import save_file

        if not tensors:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        index_path = self.folder / f"index-{writer}.json"
        index = json.loads(index_path.read_text()) if index_path.exists() else {}
        keys = sorted(tensors)
        for start in range(0, len(keys), shard_size):
            name = f"shard-{writer}-{len(set(index.values())):05d}.safetensors"
            chunk = {k: tensors[k].contiguous().cpu() for k in keys[start : start + shard_size]}
            write_atomic(self.folder / name, lambda tmp, chunk=chunk: save_file(chunk, str(tmp)))
            index.update(dict.fromkeys(chunk, name))
        write_bytes_atomic(index_path, json.dumps(index).encode())  # the shards count once the index names them
        self._index = None


def scene_key(content_key: str, config, identity: str) -> str:
    """Store key of a scene's latents: its shot and frame window, the output size, the encoder."""
    return "latent-" + content_hash(content_key, config.num_frames, config.height, config.width, identity)


def text_key(caption: str, identity: str) -> str:
    return "text-" + content_hash(caption, identity)


def stable_seed(*parts) -> int:
    return int(
        np.frombuffer(hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest(), np.uint64)[0] % 2**31
    )
