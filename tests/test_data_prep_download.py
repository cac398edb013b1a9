"""data_prep.download: resumable HTTP downloads, md5 checks and refusal of unsafe archive members."""
from __future__ import annotations

import io
import os
import tarfile
import zipfile

import pytest
from fgvc_fixtures import FileServer, md5, write_tar

from data_prep import download as dl


@pytest.fixture
def server(tmp_path):
    folder = tmp_path / "served"
    folder.mkdir()
    (folder / "blob.bin").write_bytes(os.urandom(300_000))
    served = FileServer(folder)
    yield served
    served.close()


@pytest.fixture(autouse=True)
def no_retry_wait(monkeypatch):
    monkeypatch.setattr(dl, "RETRY_DELAY_S", 0.0)


def test_a_dropped_connection_resumes_with_a_range_request(server, tmp_path):
    server.drop_first.add("blob.bin")
    dest = tmp_path / "out" / "blob.bin"
    dl.download(server.url("blob.bin"), dest, md5(server.folder / "blob.bin"))
    assert md5(dest) == md5(server.folder / "blob.bin") and not dest.with_name("blob.bin.part").exists()
    (_, first), (_, second) = server.requests
    assert "Range" not in first and second["Range"] == "bytes=150000-"


def test_a_part_file_from_an_earlier_run_is_continued(server, tmp_path):
    data = (server.folder / "blob.bin").read_bytes()
    dest = tmp_path / "blob.bin"
    dest.with_name("blob.bin.part").write_bytes(data[:1000])
    dl.download(server.url("blob.bin"), dest, md5(server.folder / "blob.bin"))
    assert dest.read_bytes() == data
    assert [h.get("Range") for _, h in server.requests] == ["bytes=1000-"]


def test_a_complete_part_file_is_not_fetched_again(server, tmp_path):
    data = (server.folder / "blob.bin").read_bytes()
    dest = tmp_path / "blob.bin"
    dest.with_name("blob.bin.part").write_bytes(data)
    dl.download(server.url("blob.bin"), dest, md5(server.folder / "blob.bin"))  # server answers 416
    assert dest.read_bytes() == data


def test_a_server_without_range_support_restarts_from_zero(server, tmp_path):
    server.ranges = False
    server.drop_first.add("blob.bin")
    dest = tmp_path / "blob.bin"
    dl.download(server.url("blob.bin"), dest, md5(server.folder / "blob.bin"))
    assert dest.read_bytes() == (server.folder / "blob.bin").read_bytes() and len(server.requests) == 2


def test_a_wrong_checksum_deletes_the_download_and_says_so(server, tmp_path):
    dest = tmp_path / "out" / "blob.bin"
    with pytest.raises(dl.ChecksumError, match=r"blob.bin.*corrupt or not the expected file.*expected 0{32}.*--md5"):
        dl.download(server.url("blob.bin"), dest, "0" * 32)
    assert list(dest.parent.iterdir()) == []


def test_an_http_error_says_how_to_supply_the_file(server, tmp_path):
    with pytest.raises(dl.DownloadError, match="HTTP 404.*--archive.*--url"):
        dl.download(server.url("missing.tgz"), tmp_path / "missing.tgz", None)
    assert len(server.requests) == 1  # client errors are not retried


def test_a_connection_that_keeps_dropping_gives_up_and_keeps_the_part_file(server, tmp_path, monkeypatch):
    monkeypatch.setattr(dl, "RETRIES", 2)
    server.ranges = False
    server.drop_always.add("blob.bin")
    dest = tmp_path / "blob.bin"
    with pytest.raises(dl.DownloadError, match="failed 2 times.*next run resumes"):
        dl.download(server.url("blob.bin"), dest, None)
    assert dest.with_name("blob.bin.part").stat().st_size == 150_000 and not dest.exists()


def _tar_with(member: tarfile.TarInfo, path):
    with tarfile.open(path, "w:gz") as tar:
        tar.addfile(member, io.BytesIO(b"x" * member.size) if member.isfile() else None)
    return path


def _file(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 1
    return info


def _link(name: str, target: str, kind=tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize("member", [
    _file("../evil.txt"), _file("ok/../../evil.txt"), _file("/tmp/evil.txt"),
    _link("escape", "../../outside"), _link("absolute", "/etc/passwd"), _link("hard", "../outside", tarfile.LNKTYPE),
], ids=["dotdot", "nested-dotdot", "absolute", "symlink-out", "symlink-absolute", "hardlink-out"])
def test_unsafe_tar_members_are_refused(tmp_path, member):
    archive = _tar_with(member, tmp_path / "bad.tgz")
    dest = tmp_path / "a" / "b"
    dest.mkdir(parents=True)
    with pytest.raises(dl.UnsafeArchiveError, match="refusing to extract.*bad.tgz"):
        dl.extract(archive, dest)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b", "bad.tgz"]


@pytest.mark.parametrize("name", ["../evil.txt", "/evil.txt"])
def test_unsafe_zip_members_are_refused_before_anything_is_written(tmp_path, name):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("good.txt", "fine")
        zf.writestr(name, "evil")
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(dl.UnsafeArchiveError, match="outside the extraction folder"):
        dl.extract(archive, dest)
    assert list(dest.iterdir()) == []


def test_zip_symlinks_are_refused(tmp_path):
    archive = tmp_path / "link.zip"
    info = zipfile.ZipInfo("link")
    info.external_attr = (0o120777 << 16)
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(dl.UnsafeArchiveError, match="symlink"):
        dl.extract(archive, tmp_path)


def test_tar_and_zip_archives_extract(tmp_path):
    write_tar(tmp_path / "a.tgz", {"top/x.txt": b"1", "top/sub/y.txt": b"2"})
    with zipfile.ZipFile(tmp_path / "b.zip", "w") as zf:
        zf.writestr("z/w.txt", "3")
    (tmp_path / "out").mkdir()
    dl.extract(tmp_path / "a.tgz", tmp_path / "out")
    dl.extract(tmp_path / "b.zip", tmp_path / "out")
    assert (tmp_path / "out/top/sub/y.txt").read_text() == "2" and (tmp_path / "out/z/w.txt").read_text() == "3"


def test_a_truncated_archive_is_refused(tmp_path):
    archive = write_tar(tmp_path / "a.tgz", {f"f{i}": os.urandom(5000) for i in range(5)})
    archive.write_bytes(archive.read_bytes()[:3000])
    (tmp_path / "out").mkdir()
    with pytest.raises(dl.UnsafeArchiveError, match="refusing to extract"):
        dl.extract(archive, tmp_path / "out")
