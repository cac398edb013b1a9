"""Shared downloader: resumable HTTP downloads, md5 checks and safe archive extraction.

A download goes to ``<dest>.part`` and is renamed to ``dest`` only after its md5 matches. A dropped
connection resumes from the end of the ``.part`` file with an HTTP ``Range`` request, both within one run
(``RETRIES`` attempts) and in a later run. Archives are extracted with tarfile's ``data`` filter (plus a
refusal of absolute member names, which that filter would silently make relative); zip members are checked
the same way before anything is written.
"""
from __future__ import annotations

import errno
import http.client
import logging
import os
import stat
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from typing import Optional

from torchvision.datasets.utils import calculate_md5
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

RETRIES = 5  # attempts per download before giving up (the .part file stays for the next run)
RETRY_DELAY_S = 1.0  # wait before the n-th retry: RETRY_DELAY_S * 2**(n-1), at most 30 s
CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60
_TRANSIENT = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError)
DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)  # no space left, over a file-size limit, over a quota


class DownloadError(OSError):
    """A download failed for good (HTTP error, or the connection kept dropping); the message says what to do."""


class ChecksumError(ValueError):
    """A file's md5 differs from the expected one."""


class UnsafeArchiveError(ValueError):
    """An archive is unreadable or has a member that would land outside the extraction folder."""


def verify_md5(path: Path, md5: Optional[str]) -> None:
    """Raises ChecksumError unless ``path`` has md5 ``md5`` (None: nothing to check)."""
    if md5 is None:
        return
    logger.info("checking the md5 of %s", path)
    actual = calculate_md5(path)
    if actual != md5.lower():
        raise ChecksumError(f"{path} has md5 {actual}, expected {md5.lower()}")


def download(url: str, dest: Path, md5: Optional[str]) -> Path:
    """Downloads ``url`` to ``dest`` (resuming ``dest.part``), checks ``md5`` and returns ``dest``.

    A complete download with the wrong md5 is deleted (it is this function's own file) before ChecksumError.
    """
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, RETRIES + 1):
        try:
            _fetch_into(url, part)
            break
        except _TRANSIENT as error:
            if attempt == RETRIES:
                raise DownloadError(
                    f"downloading {url} failed {RETRIES} times ({error}); {_size(part)} are kept in {part} and the "
                    "next run resumes from there, or download the file by hand and pass --archive") from error
            delay = min(RETRY_DELAY_S * 2 ** (attempt - 1), 30.0)
            logger.warning("download of %s interrupted (%s); resuming in %.0f s", url, error, delay)
            time.sleep(delay)
        except OSError as error:
            if error.errno not in DISK_FULL:
                raise
            raise DownloadError(
                f"the disk filled up while downloading {url} ({error.strerror}); {_size(part)} are kept in {part}: "
                "free some space and run the same command again, it resumes from there") from error
    try:
        verify_md5(part, md5)
    except ChecksumError as error:
        part.unlink()
        raise ChecksumError(f"the download of {url} is corrupt or not the expected file: {error}. It was deleted; "
                            "run the command again, or pass --md5 with the checksum a mirror publishes") from None
    part.replace(dest)
    return dest


def _fetch_into(url: str, part: Path) -> None:
    """One attempt: appends the rest of ``url`` to ``part`` (from its current size)."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # nothing left to fetch: the .part file is complete
            return
        if error.code < 500:
            raise DownloadError(f"{url} answered HTTP {error.code} {error.reason}; download the file by hand and "
                                "pass it with --archive, or pass --url with a working mirror") from None
        raise
    with response:
        if offset and response.status != 206:  # the server ignored the range: start over
            offset = 0
        length = response.headers.get("Content-Length")
        expected = int(length) if length is not None else None
        received = 0
        with open(part, "ab" if offset else "wb") as f, tqdm(
                total=None if expected is None else offset + expected, initial=offset, unit="B", unit_scale=True,
                desc=Path(part.stem).name, leave=False) as bar:
            while chunk := response.read(CHUNK_BYTES):
                f.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if expected is not None and received < expected:  # http.client returns b"" at a dropped connection
        raise ConnectionError(f"connection closed after {received} of {expected} bytes")


def _size(path: Path) -> str:
    if not path.exists():
        return "no bytes"
    size = path.stat().st_size
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size:,} bytes"


# ----------------------------------------------------------------------------- extraction


def extract(archive: Path, dest: Path) -> None:
    """Extracts a tar (any compression) or zip ``archive`` into the existing folder ``dest``.

    Raises UnsafeArchiveError for an unreadable archive, an absolute member name, a member or link that
    would land outside ``dest``, or a special file (device, fifo).
    """
    if not hasattr(tarfile, "data_filter"):
        raise UnsafeArchiveError("safe extraction needs tarfile's data filter: use Python >= 3.10.12 or >= 3.11.4")
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, dest)
        else:
            with tarfile.open(archive) as tar:
                tar.extractall(dest, members=tqdm(tar, desc=f"extracting {archive.name}", unit=" files",
                                                  leave=False), filter=_tar_filter)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as error:
        raise UnsafeArchiveError(f"refusing to extract {archive}: {error}") from None


def _tar_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    """tarfile's ``data`` filter, which also refuses (instead of rewriting) absolute member names."""
    if _is_absolute(member.name):
        raise tarfile.AbsolutePathError(member)
    return tarfile.data_filter(member, dest)


def _extract_zip(archive: Path, dest: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        for info in members:  # check every member before writing any
            parts = PurePosixPath(info.filename.replace("\\", "/")).parts
            if _is_absolute(info.filename) or ".." in parts:
                raise UnsafeArchiveError(f"refusing to extract {archive}: member {info.filename!r} would be "
                                         "written outside the extraction folder")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise UnsafeArchiveError(f"refusing to extract {archive}: member {info.filename!r} is a symlink")
        for info in tqdm(members, desc=f"extracting {archive.name}", unit=" files", leave=False):
            zf.extract(info, dest)


def _is_absolute(name: str) -> bool:
    return name.startswith(("/", "\\")) or os.path.isabs(name) or (len(name) > 1 and name[1] == ":")
