"""Where manifests, videos and caches live: a local path, or an object-store URL (s3://, gs://, ...).

    location("out/manifest")          -> pathlib.Path, unchanged behaviour
    location("s3://bucket/manifest")  -> ObjectPath, the subset of pathlib the jobs use

Object stores go through fsspec (`s3fs` for s3://, `gcsfs` for gs://), so any S3-compatible server
works: point at it with the standard `AWS_ENDPOINT_URL` (MinIO, R2, a local test server). Credentials
come from the standard environment/profile/instance chain of the store's own library; nothing here
reads, logs or writes them.

On an object store, a write is one upload that completes or leaves nothing (S3 PUT and multipart
uploads only appear once complete): that is what "atomic" means there, and it is all the commit rule
of `manifests.io` needs (a batch counts once its `videos` object exists). Listings are always fresh
(fsspec's listing cache is bypassed), because other processes write the same prefixes.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
from pathlib import Path
from types import SimpleNamespace
from typing import IO, Any

LOCAL_SCHEMES = ("file://", "local://")


def is_url(path: Any) -> bool:
    """Whether `path` names an object in a store (scheme://...) rather than a local file."""
    text = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
    return "://" in text and not text.startswith(LOCAL_SCHEMES)


def location(path: str | os.PathLike) -> Path | ObjectPath:
    """A local `Path` (with `~` expanded), or an `ObjectPath` for a store URL."""
    if isinstance(path, (Path, ObjectPath)):
        return path
    text = os.fspath(path)
    if is_url(text):
        return ObjectPath(text)
    for scheme in LOCAL_SCHEMES:
        text = text.removeprefix(scheme)
    return Path(text).expanduser()


def within(resolved_folder: Path, path: str | os.PathLike) -> bool:
    """Whether the local `path`, links resolved, is `resolved_folder` or lies below it: what is written
    or deleted under an output is never led out of it through a link."""
    target = Path(path).resolve()
    return target == resolved_folder or target.is_relative_to(resolved_folder)


def absolute(path: str | os.PathLike) -> str:
    """`path` as recorded in a manifest: absolute for a local file, the URL itself for a stored one."""
    where = location(path)
    return str(where) if isinstance(where, ObjectPath) else os.path.abspath(where)


def open_input(path: str | os.PathLike, block_size: int = 8 << 20) -> IO[bytes]:
    """A seekable binary file to read (what PyAV and the hashers need); remote reads are buffered
    in `block_size` blocks, so a decoder's small reads and seeks cost few requests."""
    where = location(path)
    if isinstance(where, ObjectPath):
        return where.fs.open(where.key, "rb", block_size=block_size, cache_type="readahead")
    return open(where, "rb")


def arrow(path: Path | ObjectPath) -> dict[str, Any]:
    """What pyarrow's readers need for `path`: {"path": the string to pass, "filesystem": the store's
    filesystem, or None for a local file}."""
    where = location(path)
    if isinstance(where, ObjectPath):
        return {"path": where.key, "filesystem": where.fs}
    return {"path": str(where), "filesystem": None}


class StoreError(OSError):
    """An object-store URL cannot be used: no library for its scheme, or the store refused."""


def _filesystem(url: str):
    import fsspec

    protocol = url.split("://", 1)[0]
    options = {"use_listings_cache": False} if protocol in ("s3", "s3a", "gs", "gcs", "az", "abfs") else {}
    try:
        fs, _ = fsspec.core.url_to_fs(url, **options)
    except ImportError as err:
        needed = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}
        raise StoreError(f"{url}: reading {protocol}:// needs `pip install {needed.get(protocol, protocol)}` "
                         f"({err})") from err  # fmt: skip
    except ValueError as err:
        raise StoreError(f"{url}: unknown storage scheme {protocol!r} ({err})") from err
    return fs


class ObjectPath:
    """A key in an object store, with the part of `pathlib.Path`'s interface the jobs use.

    Folders are key prefixes: `mkdir` does nothing, `is_dir` means "some key lies below". Only the
    URL is pickled (Ray ships these to workers); the filesystem is made again where it is used."""

    __slots__ = ("url", "_fs", "_pid")

    def __init__(self, url: str):
        scheme, rest = url.split("://", 1)
        # A key is a string, not a path: 'in/dir/../a.mp4' and 'in/a//b.mp4' are objects of their own,
        # kept verbatim (normalising them would merge distinct objects). Only the ends are trimmed.
        self.url = f"{scheme}://{rest.strip('/')}"
        self._fs, self._pid = None, None

    # --- identity --------------------------------------------------------------------------
    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"ObjectPath({self.url!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, ObjectPath) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    def __lt__(self, other: ObjectPath) -> bool:
        return self.url < other.url

    def __getstate__(self):
        return self.url

    def __setstate__(self, url):
        self.url, self._fs, self._pid = url, None, None

    @property
    def fs(self):
        """The store's filesystem; made again in a forked child (a data-loader worker), whose parent's
        client belongs to an event loop the child does not have."""
        if self._fs is None or self._pid != os.getpid():
            self._fs, self._pid = _filesystem(self.url), os.getpid()
        return self._fs

    @property
    def key(self) -> str:
        """The path without its scheme (`bucket/prefix/name`), as fsspec and pyarrow want it."""
        return self.url.split("://", 1)[1]

    # --- pure path arithmetic --------------------------------------------------------------------
    def __truediv__(self, other: str | os.PathLike) -> ObjectPath:
        """This prefix joined with a relative reference (a name, or a list file's `../other/c.mp4`):
        the reference's '.' and '..' segments are resolved, as in a URL, never above the bucket."""
        scheme, key = self.url.split("://", 1)
        parts = key.split("/")
        for segment in os.fspath(other).split("/"):
            if segment == "..":
                if len(parts) > 1:
                    parts.pop()
            elif segment != ".":
                parts.append(segment)
        return ObjectPath(f"{scheme}://{'/'.join(parts)}")

    def joinpath(self, *parts: str) -> ObjectPath:
        result = self
        for part in parts:
            result = result / part
        return result

    @property
    def name(self) -> str:
        return posixpath.basename(self.key)

    @property
    def suffix(self) -> str:
        return posixpath.splitext(self.name)[1]

    @property
    def stem(self) -> str:
        return posixpath.splitext(self.name)[0]

    @property
    def parent(self) -> ObjectPath:
        scheme = self.url.split("://", 1)[0]
        return ObjectPath(f"{scheme}://{posixpath.dirname(self.key)}")

    @property
    def parents(self) -> list[ObjectPath]:
        found, current = [], self
        while "/" in current.key:
            current = current.parent
            found.append(current)
        return found

    def is_absolute(self) -> bool:
        return True

    def absolute(self) -> ObjectPath:
        return self

    def resolve(self) -> ObjectPath:
        return self

    def expanduser(self) -> ObjectPath:
        return self

    def relative_to(self, other: ObjectPath) -> str:
        prefix = other.key.rstrip("/") + "/"
        if not self.key.startswith(prefix):
            raise ValueError(f"{self} is not below {other}")
        return self.key[len(prefix) :]

    # --- queries -------------------------------------------------------------------------------
    def _info(self) -> dict | None:
        try:
            return self.fs.info(self.key)
        except FileNotFoundError:
            return None

    def exists(self) -> bool:
        return self._info() is not None

    def is_file(self) -> bool:
        info = self._info()
        return info is not None and info.get("type") == "file"

    def is_dir(self) -> bool:
        info = self._info()
        return info is not None and info.get("type") == "directory"

    def stat(self) -> SimpleNamespace:
        info = self._info()
        if info is None:
            raise FileNotFoundError(str(self))
        modified = info.get("LastModified") or info.get("mtime") or info.get("updated")
        stamp = modified.timestamp() if hasattr(modified, "timestamp") else float(modified or 0)
        return SimpleNamespace(st_size=int(info.get("size") or 0), st_mtime=stamp, st_mtime_ns=int(stamp * 1e9))

    def iterdir(self) -> list[ObjectPath]:
        """The keys and prefixes directly below (one listing request per 1,000 keys)."""
        try:
            entries = self.fs.ls(self.key, detail=False)
        except FileNotFoundError:
            return []
        scheme = self.url.split("://", 1)[0]
        return [ObjectPath(f"{scheme}://{entry}") for entry in entries if entry.rstrip("/") != self.key]

    def glob(self, pattern: str) -> list[ObjectPath]:
        """Direct children whose name matches `pattern` (no `**`: the jobs never need recursion here)."""
        return [p for p in self.iterdir() if fnmatch.fnmatchcase(p.name, pattern)]

    def walk_files(self) -> list[ObjectPath]:
        """Every object below this prefix, recursively, sorted."""
        scheme = self.url.split("://", 1)[0]
        try:
            keys = self.fs.find(self.key)
        except FileNotFoundError:
            return []
        return sorted(ObjectPath(f"{scheme}://{key}") for key in keys)

    # --- reading and writing ---------------------------------------------------------------------
    def read_bytes(self) -> bytes:
        return self.fs.cat_file(self.key)

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> int:
        """One upload: the object is complete or absent, never partial."""
        self.fs.pipe_file(self.key, bytes(data))
        return len(data)

    def write_text(self, text: str, encoding: str = "utf-8") -> int:
        return self.write_bytes(text.encode(encoding))

    def upload(self, local: str | os.PathLike) -> None:
        """Put a finished local file here (multipart for big files: the object appears when complete)."""
        self.fs.put_file(os.fspath(local), self.key)

    def open(self, mode: str = "rb", **kwargs) -> IO:
        if "r" not in mode:
            raise StoreError(f"{self}: write objects with write_bytes/upload (one complete upload), not open()")
        handle = self.fs.open(self.key, "rb")
        if "b" in mode:
            return handle
        import io

        return io.TextIOWrapper(handle, encoding=kwargs.get("encoding") or "utf-8", newline=kwargs.get("newline"))

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Prefixes need no creating."""

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.rm_file(self.key)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def rmtree(self) -> None:
        try:
            self.fs.rm(self.key, recursive=True)
        except FileNotFoundError:
            pass


def _validate(value: Any) -> Path | ObjectPath:
    if isinstance(value, (Path, ObjectPath)):
        return value
    if isinstance(value, (str, os.PathLike)):
        return location(value)
    raise ValueError(f"expected a path or an object-store URL (s3://bucket/key), got {type(value).__name__}")


def _location_type():
    from typing import Annotated

    from pydantic import PlainSerializer, PlainValidator, WithJsonSchema

    return Annotated[
        Path | ObjectPath,
        PlainValidator(_validate),
        PlainSerializer(str, return_type=str),
        WithJsonSchema({"type": "string", "description": "a local path or an object-store URL"}),
    ]


Location = _location_type()  # a config field holding a local path or an object-store URL (pydantic)
