"""Model archives: a model folder as one deterministic .tar.gz, and back, safely.

`pack_model_dir` writes the same bytes (so the same sha256) for the same files: members sorted,
mtime 0, owner 0/0 with no names, modes normalised, gzip header without a time or file name.
`unpack_model_archive` refuses absolute paths, `..` members, links and devices (naming the
archive and the member) and then extracts with tarfile's `data` filter. `fetch_model_archive`
downloads an archive from an S3ArtifactStore, checks its sha256 and unpacks it into a
content-addressed cache folder. Plain Python: no Dagster import.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Protocol

from resources.clients.artifacts import file_sha256

ARCHIVE_SUFFIX = ".tar.gz"


class ArchiveDownloader(Protocol):
    """What fetch_model_archive needs of a store (S3ArtifactStore)."""

    def key_for_uri(self, uri: str) -> str: ...

    def download_file(self, key: str, path: str | os.PathLike[str]) -> str: ...


def model_archive_key(asset_name: str, run_id: str) -> str:
    """Run-scoped store key of a model asset's archive: `models/<asset>/<run id>.tar.gz`."""
    return f"models/{asset_name}/{run_id}{ARCHIVE_SUFFIX}"


def _members(folder: Path, exclude: frozenset[str]) -> list[Path]:
    """Files and folders under `folder`, sorted by relative path; top-level `exclude` skipped."""
    found: list[Path] = []
    for path in folder.rglob("*"):
        relative = path.relative_to(folder)
        if relative.parts[0] in exclude:
            continue
        if path.is_symlink():
            raise ValueError(f"model folder {folder}: {relative.as_posix()} is a symbolic "
                             "link; an archive holds regular files only")
        found.append(path)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _tar_info(path: Path, name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if path.is_dir():
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    else:
        info.size = path.stat().st_size
        info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
    return info


def pack_model_dir(folder: str | os.PathLike[str], archive: str | os.PathLike[str] | None = None,
                   *, exclude: Iterable[str] = ()) -> tuple[Path, str]:
    """Pack `folder` into `archive` (default: `<folder>.tar.gz` beside it), members relative to
    `folder`; top-level names in `exclude` are left out. Returns (archive path, sha256)."""
    source = Path(folder)
    if not source.is_dir():
        raise FileNotFoundError(f"model folder {source} does not exist")
    target = Path(archive) if archive is not None else source.with_name(source.name
                                                                          + ARCHIVE_SUFFIX)
    members = _members(source, frozenset(exclude))
    partial = target.with_name(target.name + ".partial")
    with open(partial, "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as zipped, \
            tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in members:
            info = _tar_info(path, path.relative_to(source).as_posix())
            if info.isdir():
                tar.addfile(info)
            else:
                with path.open("rb") as handle:
                    tar.addfile(info, handle)
    os.replace(partial, target)
    return target, file_sha256(target)


def _check_member(archive: Path, member: tarfile.TarInfo) -> None:
    name = PurePosixPath(member.name)
    if member.name.startswith(("/", "\\")) or name.is_absolute() or ".." in name.parts:
        raise ValueError(f"model archive {archive}: member {member.name!r} would be written "
                         "outside the destination folder")
    if member.issym() or member.islnk():
        raise ValueError(f"model archive {archive}: member {member.name!r} is a link "
                         f"(to {member.linkname!r}); model archives hold regular files only")
    if not (member.isfile() or member.isdir()):
        raise ValueError(f"model archive {archive}: member {member.name!r} is not a regular "
                         "file or folder")


def unpack_model_archive(archive: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Extract `archive` into the folder `dest` (created); every member is checked first, so a
    bad archive writes nothing. Returns `dest`."""
    source, target = Path(archive), Path(dest)
    with tarfile.open(source, "r:gz") as tar:
        members = tar.getmembers()
        for member in members:
            _check_member(source, member)
        target.mkdir(parents=True, exist_ok=True)
        tar.extractall(target, members=members, filter="data")
    return target


def fetch_model_archive(store: ArchiveDownloader, uri: str, sha256: str,
                        cache_dir: str | os.PathLike[str]) -> Path:
    """The unpacked folder of the archive at `uri`: `<cache_dir>/<sha256>`, downloaded, checked
    against `sha256` and unpacked on first use (atomically: a half-unpacked folder is never
    reused); ValueError naming the URI when the downloaded bytes differ."""
    cache = Path(cache_dir)
    folder = cache / sha256
    if folder.is_dir():
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".fetch-") as work:
        archive = Path(work) / f"model{ARCHIVE_SUFFIX}"
        actual = store.download_file(store.key_for_uri(uri), archive)
        if actual != sha256:
            raise ValueError(f"model archive {uri}: sha256 {actual} differs from the recorded "
                             f"{sha256}; the object was changed or replaced")
        unpacked = unpack_model_archive(archive, Path(work) / "unpacked")
        try:
            os.replace(unpacked, folder)
        except OSError:  # another process unpacked the same archive first
            if not folder.is_dir():
                raise
            shutil.rmtree(unpacked)
    return folder
