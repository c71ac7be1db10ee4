"""Unpack an uploaded zip of knowledge-base files without trusting anything it says about itself.

A zip comes from outside: member names can point out of the folder, members can be links, nested
archives or encrypted, and sizes can be declared small and unpack huge. Every member is checked from the
zip's directory before anything is written, and the bytes are counted again while writing.
"""

from __future__ import annotations

import lzma
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .records import IngestError

NESTED_ARCHIVES = (".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar")
_MB = 1024 * 1024
_CHUNK = _MB


@dataclass(frozen=True)
class ZipLimits:
    """How much a zip may unpack to; a zip past any limit is refused whole."""

    max_members: int = 10_000
    max_total_bytes: int = 200 * _MB
    max_ratio: float = 100.0  # uncompressed / compressed size of one member...
    ratio_min_bytes: int = _MB  # ...checked for members that unpack past this size


def unpack_zip(path: Path, dest: Path, limits: ZipLimits = ZipLimits()) -> list[Path]:
    """Extract the zip's files into `dest` (a fresh folder the caller owns and removes); return them sorted.

    Folders inside the zip are kept; macOS's `__MACOSX/` and `._*` companions are skipped.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            members = _checked_members(archive, dest, limits)
            for info, target in members:
                _extract(archive, info, target)
    except IngestError:
        raise
    except OSError as err:  # strerror alone: the message must not name our temporary folder
        raise IngestError(f"not a readable zip ({err.strerror or err})") from None
    except (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, NotImplementedError, ValueError) as err:
        raise IngestError(f"not a readable zip ({err})") from None
    return sorted(target for _, target in members)


def _checked_members(archive: zipfile.ZipFile, dest: Path, limits: ZipLimits) -> list[tuple[zipfile.ZipInfo, Path]]:
    """Every file member with its target path, after checking the directory's claims against the limits."""
    infos = archive.infolist()
    if len(infos) > limits.max_members:
        raise IngestError(f"{len(infos):,} members, over the limit of {limits.max_members:,}")
    root = dest.resolve()
    members: list[tuple[zipfile.ZipInfo, Path]] = []
    seen: set[Path] = set()
    declared = 0
    for info in infos:
        name = info.filename
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if not parts:
            continue
        if name.startswith(("/", "\\")) or parts[0].endswith(":") or ".." in parts:
            raise IngestError(f"member '{name}' escapes the archive folder")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise IngestError(f"member '{name}' is a symbolic link")
        if info.is_dir() or parts[0] == "__MACOSX" or parts[-1].startswith("._"):
            continue
        if info.flag_bits & 0x1:
            raise IngestError(f"member '{name}' is encrypted: unzip it with its password and add the files")
        if name.lower().endswith(NESTED_ARCHIVES):
            raise IngestError(f"nested archive '{name}': unzip it first")
        if info.file_size > limits.ratio_min_bytes and info.file_size > limits.max_ratio * max(info.compress_size, 1):
            raise IngestError(f"member '{name}' expands {info.file_size / max(info.compress_size, 1):,.0f} times "
                              f"(over {limits.max_ratio:g}): a zip bomb?")
        declared += info.file_size
        if declared > limits.max_total_bytes:
            raise IngestError(f"unpacks to over {_size(limits.max_total_bytes)}, the limit")
        target = root.joinpath(*parts)
        if not target.resolve().is_relative_to(root):
            raise IngestError(f"member '{name}' escapes the archive folder")
        if target in seen:
            raise IngestError(f"member '{name}' appears twice")
        seen.add(target)
        members.append((info, target))
    return members


def _extract(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> None:
    """Write one member, counting its bytes: the limits were checked on the declared sizes, so a member
    may not write past its own (zipfile stops there today; this keeps the bound if a reader does not)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with archive.open(info) as source, open(target, "xb") as out:
        while chunk := source.read(_CHUNK):
            written += len(chunk)
            if written > info.file_size:
                raise IngestError(f"member '{info.filename}' unpacks past its declared size: a zip bomb?")
            out.write(chunk)


def _size(n: float) -> str:
    return f"{n / _MB:,.0f} MB" if n >= _MB else f"{n:,.0f} bytes"
