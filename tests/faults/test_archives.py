"""Cases 6 and 10: bad archives and downloads through `python -m data_prep cub` (one line, exit 2, the user's files
untouched), and a download interrupted with Ctrl-C that a second run resumes with an HTTP Range request."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from fgvc_fixtures import FileServer, build_cub, md5

from data_prep import download
from data_prep.__main__ import main

ARCHIVE = "CUB_200_2011.tgz"


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file and folder under ``folder``: (mtime, bytes) of files, so a changed, new or deleted one shows."""
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes()) if p.is_file() else "folder"
            for p in sorted(folder.rglob("*"))}


def error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line or "interrupted" in line]
    assert len(lines) == 1, lines
    return lines[0]


def with_extra_member(archive: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    """``archive`` re-written with one more member (e.g. a symlink), placed among the dataset's own members."""
    with tarfile.open(archive) as source:
        members = [(info, source.extractfile(info).read() if info.isfile() else None) for info in source]
    members.insert(len(members) // 2, (member, data if member.isfile() else None))
    with tarfile.open(archive, "w:gz") as target:
        for info, content in members:
            if content is not None:
                info.size = len(content)
            target.addfile(info, io.BytesIO(content) if content is not None else None)
    return archive


@pytest.fixture
def home(tmp_path) -> Path:
    """A user's folder: notes beside the dataset root, and the dataset root holding only the user's own archive."""
    (tmp_path / "notes.txt").write_text("my notes")
    (tmp_path / "cub").mkdir()
    return tmp_path


def unsafe(kind: str, home: Path) -> Path:
    """The user's archive in the root, with one member that would write outside it."""
    archive = home / "cub" / ARCHIVE
    if kind == "dotdot":  # extracted in cub/.staging-*/, "../../notes.txt" is the user's notes
        build_cub(home / "cub", extra={"../../notes.txt": b"overwritten"})
    elif kind == "absolute":
        build_cub(home / "cub", extra={str(home / "notes.txt"): b"overwritten"})
    else:  # a symlink out of the root, then a file written through it
        build_cub(home / "cub")
        link = tarfile.TarInfo("CUB_200_2011/images/outside")
        link.type, link.linkname = tarfile.SYMTYPE, "../../../../"
        with_extra_member(archive, link)
        through = tarfile.TarInfo("CUB_200_2011/images/outside/notes.txt")
        with_extra_member(archive, through, b"overwritten")
    return archive


@pytest.mark.parametrize("kind, message", [
    ("dotdot", r"refusing to extract .*CUB_200_2011.tgz: '\.\./\.\.(/notes\.txt)?' would be extracted to .*, which "
               r"is outside the destination"),
    ("absolute", r"refusing to extract .*CUB_200_2011.tgz: member '/.*' has an absolute path"),
    ("symlink", r"refusing to extract .*CUB_200_2011.tgz: 'CUB_200_2011/images/outside' would link to .* outside"),
], ids=["dotdot", "absolute", "symlink"])
def test_unsafe_archive_members_are_refused_and_nothing_is_touched(kind, message, home, capsys, outcome):
    """6a · an archive with a `../`, an absolute-path or an escaping-symlink member → refused; the user's files intact"""
    archive = unsafe(kind, home)
    before = snapshot(home)
    code = main(["cub", "--root", str(home / "cub"), "--archive", str(archive), "--md5", md5(archive)])
    line = error_line(capsys)
    assert code == 2 and line.startswith("python -m data_prep cub: error: ")
    assert __import__("re").search(message, line), line
    assert snapshot(home) == before  # notes, archive and root as they were; no staging folder left behind
    outcome(line.split("error: ", 1)[1].replace(str(home), "~")[:140])


def test_a_truncated_archive_is_refused_before_anything_is_moved(home, capsys, outcome):
    """6b · a truncated archive (its own md5 passed, so it gets as far as extraction) → refused; files intact"""
    build_cub(home / "cub")
    archive = home / "cub" / ARCHIVE
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size * 2 // 3])
    before = snapshot(home)
    code = main(["cub", "--root", str(home / "cub"), "--archive", str(archive), "--md5", md5(archive)])
    line = error_line(capsys)
    assert code == 2 and f"refusing to extract {archive}" in line
    assert snapshot(home) == before
    outcome(line.split("error: ", 1)[1].replace(str(home), "~")[:140])


@pytest.fixture
def server(tmp_path):
    folder = tmp_path / "served"
    folder.mkdir()
    fixture = build_cub(folder)
    served = FileServer(folder)
    served.md5 = fixture.md5s[ARCHIVE]
    yield served
    served.close()


@pytest.fixture(autouse=True)
def no_retry_wait(monkeypatch):
    monkeypatch.setattr(download, "RETRY_DELAY_S", 0.0)


def test_a_wrong_checksum_is_refused_and_leaves_no_root(server, home, capsys, outcome):
    """6c · a download whose md5 is not the expected one → refused, deleted, no root created"""
    root = home / "new-root"
    before = snapshot(home)
    code = main(["cub", "--root", str(root), "--url", server.url(ARCHIVE), "--md5", "0" * 32])
    line = error_line(capsys)
    assert code == 2 and "is corrupt or not the expected file" in line and f"expected {'0' * 32}" in line
    assert snapshot(home) == before and not root.exists()
    outcome(line.split("error: ", 1)[1].replace(str(home), "~")[:140])


def test_a_truncated_download_is_not_used(server, home, capsys, monkeypatch, outcome):
    """6d · a download cut short every time → gives up with the .part kept; never extracted; the rerun completes it"""
    monkeypatch.setattr(download, "RETRIES", 2)
    server.ranges = False
    server.drop_always.add(ARCHIVE)
    root = home / "cub"
    code = main(["cub", "--root", str(root), "--url", server.url(ARCHIVE), "--md5", server.md5])
    line = error_line(capsys)
    assert code == 2 and "failed 2 times" in line and "next run resumes from there" in line
    part = root / "downloads" / f"{ARCHIVE}.part"
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == ["downloads", f"downloads/{ARCHIVE}.part"]
    kept = part.stat().st_size
    server.drop_always, server.ranges = set(), True
    assert main(["cub", "--root", str(root), "--url", server.url(ARCHIVE), "--md5", server.md5]) == 0
    assert server.requests[-1][1]["Range"] == f"bytes={kept}-"
    assert md5(root / "downloads" / ARCHIVE) == server.md5 and (root / "prepared.json").is_file()
    outcome(f"gave up after 2 cut transfers, {kept} bytes kept in .part, nothing extracted; rerun resumed at byte "
            f"{kept} and prepared the root")


class CtrlCAfter:
    """A progress bar for the download loop that raises KeyboardInterrupt once ``limit`` bytes were written."""

    limit = 0

    def __init__(self, iterable=None, *args, total=None, initial=0, **kwargs):
        self.iterable, self.written = iterable, initial

    def __iter__(self):
        return iter(self.iterable)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n):
        self.written += n
        if self.written >= self.limit:
            raise KeyboardInterrupt


def download_with_fault(monkeypatch, argv, progress, limit: int) -> int:
    """Run ``python -m data_prep`` with 4 KiB chunks and ``progress`` (a fault-injecting progress bar class) that fires
    after ``limit`` bytes; the exit code."""
    with monkeypatch.context() as patch:
        patch.setattr(download, "CHUNK_BYTES", 4096)
        patch.setattr(download, "tqdm", progress)
        progress.limit = limit
        return main(argv)


def test_ctrl_c_during_a_download_then_run_again_resumes(server, home, capsys, monkeypatch, outcome):
    """10 · Ctrl-C during a download → one line; running again resumes from the .part file (HTTP Range)"""
    root = home / "cub"
    size = (server.folder / ARCHIVE).stat().st_size
    argv = ["cub", "--root", str(root), "--url", server.url(ARCHIVE), "--md5", server.md5]
    assert download_with_fault(monkeypatch, argv, CtrlCAfter, 3 * 4096) == 130
    line = error_line(capsys)
    assert "interrupted; run the same command again: a partial download resumes from its .part file" in line
    part = root / "downloads" / f"{ARCHIVE}.part"
    assert part.stat().st_size == 3 * 4096 < size and not (root / "prepared.json").exists()
    assert sorted(p.name for p in root.iterdir()) == ["downloads"]  # no staging folder, nothing extracted
    requests = len(server.requests)
    assert main(argv) == 0
    assert [h.get("Range") for _, h in server.requests[requests:]] == [f"bytes={3 * 4096}-"]
    assert md5(root / "downloads" / ARCHIVE) == server.md5 and (root / "prepared.json").is_file()
    outcome(f"exit 130 with {3 * 4096} of {size} bytes in .part; the rerun asked for bytes={3 * 4096}- and the md5 "
            "matched")


def test_disk_full_while_extracting_removes_the_partial_extraction(home, capsys, monkeypatch, outcome):
    """6e · the disk fills up while extracting → one line; the partial extraction removed; the user's files intact"""
    import errno

    build_cub(home / "cub")
    archive = home / "cub" / ARCHIVE
    before = snapshot(home)
    written = []
    makefile = tarfile.TarFile.makefile

    def fills_up(self, tarinfo, targetpath):
        if len(written) == 5:
            raise OSError(errno.ENOSPC, "No space left on device", targetpath)
        written.append(targetpath)
        return makefile(self, tarinfo, targetpath)

    monkeypatch.setattr(tarfile.TarFile, "makefile", fills_up)
    code = main(["cub", "--root", str(home / "cub"), "--archive", str(archive), "--md5", md5(archive)])
    line = error_line(capsys)
    assert code == 2 and "the disk filled up while extracting CUB-200-2011 into" in line
    assert "the partly extracted files were removed and nothing else changed" in line
    assert snapshot(home) == before and not any(Path(p).exists() for p in written)
    outcome(line.split("error: ", 1)[1].replace(str(home), "~")[:140])


class FullDiskAfter(CtrlCAfter):
    def update(self, n):
        import errno

        self.written += n
        if self.written >= self.limit:
            raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_while_downloading_keeps_the_part_file_and_resumes(server, home, capsys, monkeypatch, outcome):
    """6f · the disk fills up while downloading → one line; the .part is kept and the next run resumes it"""
    root = home / "cub"
    argv = ["cub", "--root", str(root), "--url", server.url(ARCHIVE), "--md5", server.md5]
    assert download_with_fault(monkeypatch, argv, FullDiskAfter, 2 * 4096) == 2
    line = error_line(capsys)
    assert "the disk filled up while downloading" in line and "run the same command again, it resumes from there" in line
    assert (root / "downloads" / f"{ARCHIVE}.part").stat().st_size == 2 * 4096
    assert main(argv) == 0 and server.requests[-1][1]["Range"] == f"bytes={2 * 4096}-"
    assert md5(root / "downloads" / ARCHIVE) == server.md5
    outcome(line.split("error: ", 1)[1].replace(str(home), "~")[:140])
