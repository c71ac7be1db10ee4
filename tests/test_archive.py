"""Uploaded zips: extracted into the caller's folder only, every hostile trick refused naming the member."""

from __future__ import annotations

import io
import stat
import struct
import zipfile
from pathlib import Path

import pytest

from retrieval.archive import ZipLimits, unpack_zip
from retrieval.records import IngestError

CSV = b"id,question,answer\nzip-q,Is this zipped?,Yes it is.\n"


def make_zip(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


@pytest.fixture
def dest(tmp_path) -> Path:
    folder = tmp_path / "unpacked"
    folder.mkdir()
    return folder


def refusal(path: Path, dest: Path, limits: ZipLimits = ZipLimits()) -> str:
    with pytest.raises(IngestError) as caught:
        unpack_zip(path, dest, limits)
    message = str(caught.value)
    assert "\n" not in message and str(path) not in message and str(dest) not in message
    return message


def files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_files_and_folders_are_extracted_and_returned_sorted(tmp_path, dest):
    path = make_zip(tmp_path / "kb.zip", {"guides/returns.md": b"# Returns\n\nWithin 45 days.\n", "faq.csv": CSV,
                                          "guides/": b"", "__MACOSX/guides/._returns.md": b"\x00\x05",
                                          "guides/._returns.md": b"\x00\x05"})
    files = unpack_zip(path, dest)
    assert files == [dest.resolve() / "faq.csv", dest.resolve() / "guides" / "returns.md"]
    assert files[0].read_bytes() == CSV
    assert files_under(dest) == ["faq.csv", "guides/returns.md"]  # macOS companions are not written


def test_the_hostile_case_file_unpacks_to_its_csv(dest):
    faq = Path(__file__).parent / "hostile" / "files" / "faq.zip"
    [member] = unpack_zip(faq, dest)
    assert member.name == "faq.csv" and member.read_bytes() == CSV


@pytest.mark.parametrize("name", ["../evil.csv", "guides/../../evil.csv", "/tmp/evil.csv", "..\\evil.csv", "C:/evil.csv", "\\evil.csv"])
def test_a_member_escaping_the_folder_is_refused_and_nothing_is_written(tmp_path, dest, name):
    path = make_zip(tmp_path / "kb.zip", {"faq.csv": CSV, name: CSV})
    assert refusal(path, dest) == f"member '{name}' escapes the archive folder"
    assert files_under(tmp_path) == ["kb.zip"]  # not even the good member: checks come before writing


def test_a_symbolic_link_member_is_refused(tmp_path, dest):
    path = tmp_path / "kb.zip"
    with zipfile.ZipFile(path, "w") as archive:
        link = zipfile.ZipInfo("passwords.csv")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    assert refusal(path, dest) == "member 'passwords.csv' is a symbolic link"
    assert files_under(dest) == []


@pytest.mark.parametrize("name", ["more/inner.zip", "faq.tar", "faq.tar.gz", "faq.tgz", "kb.7z", "kb.RAR"])
def test_a_nested_archive_is_refused(tmp_path, dest, name):
    path = make_zip(tmp_path / "kb.zip", {"faq.csv": CSV, name: b"PK\x03\x04"})
    assert refusal(path, dest) == f"nested archive '{name}': unzip it first"


def test_a_compression_bomb_is_refused_before_it_is_written(tmp_path, dest):
    path = make_zip(tmp_path / "bomb.zip", {"zeros.csv": bytes(20 * 1024 * 1024)})
    assert path.stat().st_size < 100_000
    message = refusal(path, dest)
    assert message.startswith("member 'zeros.csv' expands ") and message.endswith(" times (over 100): a zip bomb?")
    assert files_under(dest) == []


def test_a_small_file_may_compress_well(tmp_path, dest):
    path = make_zip(tmp_path / "kb.zip", {"blank.csv": CSV + b" " * 500_000})  # 0.5 MB, ratio far over 100
    assert [p.name for p in unpack_zip(path, dest)] == ["blank.csv"]


def test_too_much_in_total_is_refused(tmp_path, dest):
    path = make_zip(tmp_path / "kb.zip", {f"part{i}.csv": CSV * 20 for i in range(3)}, zipfile.ZIP_STORED)
    limits = ZipLimits(max_total_bytes=2 * len(CSV) * 20 + 1)
    assert refusal(path, dest, limits) == "unpacks to over 2,081 bytes, the limit"
    assert files_under(dest) == []
    assert ZipLimits().max_total_bytes == 200 * 1024 * 1024


def test_too_many_members_are_refused(tmp_path, dest):
    path = make_zip(tmp_path / "kb.zip", {f"faq{i}.csv": CSV for i in range(12)})
    assert refusal(path, dest, ZipLimits(max_members=10)) == "12 members, over the limit of 10"
    assert ZipLimits().max_members == 10_000


def patch_headers(data: bytes, field: str, value: int) -> bytes:
    """Rewrite a field of every local and central header: what a hand-made hostile zip would claim."""
    offsets = {"flags": (6, 8, "<H"), "size": (22, 24, "<I")}[field]  # (local offset, central offset, format)
    out = bytearray(data)
    for signature, offset in ((b"PK\x03\x04", offsets[0]), (b"PK\x01\x02", offsets[1])):
        start = out.find(signature)
        while start != -1:
            struct.pack_into(offsets[2], out, start + offset, value)
            start = out.find(signature, start + 4)
    return bytes(out)


def test_a_member_lying_about_its_size_writes_no_more_than_it_declared(tmp_path, dest):
    honest = make_zip(tmp_path / "honest.zip", {"zeros.csv": bytes(20 * 1024 * 1024)}).read_bytes()
    path = tmp_path / "liar.zip"
    path.write_bytes(patch_headers(honest, "size", 1000))  # declares 1000 bytes, holds 20 MB
    assert refusal(path, dest).startswith("not a readable zip (")
    assert sum(p.stat().st_size for p in dest.rglob("*") if p.is_file()) <= 1000


def test_bytes_are_counted_while_writing(tmp_path, dest, monkeypatch):
    path = make_zip(tmp_path / "kb.zip", {"faq.csv": CSV})
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, info, *a, **k: io.BytesIO(b"x" * (info.file_size + 1)))
    assert refusal(path, dest) == "member 'faq.csv' unpacks past its declared size: a zip bomb?"


def test_an_encrypted_member_is_refused(tmp_path, dest):
    honest = make_zip(tmp_path / "honest.zip", {"secret.csv": CSV}).read_bytes()
    path = tmp_path / "locked.zip"
    path.write_bytes(patch_headers(honest, "flags", 0x1))
    assert refusal(path, dest) == "member 'secret.csv' is encrypted: unzip it with its password and add the files"


def test_a_member_twice_is_refused(tmp_path, dest):
    path = tmp_path / "kb.zip"
    with zipfile.ZipFile(path, "w") as archive, pytest.warns(UserWarning):
        archive.writestr("faq.csv", CSV)
        archive.writestr("faq.csv", b"id,question,answer\nx,Replaced?,Yes.\n")
    assert refusal(path, dest) == "member 'faq.csv' appears twice"


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04\x14\x00\x00\x00", b"question,answer\nQ?,A.\n"])
def test_a_file_that_is_not_a_zip_is_refused(tmp_path, dest, content):
    path = tmp_path / "kb.zip"
    path.write_bytes(content)
    assert refusal(path, dest) == "not a readable zip (File is not a zip file)"


def test_a_truncated_zip_is_refused(tmp_path, dest):
    data = make_zip(tmp_path / "whole.zip", {"faq.csv": CSV, "guide.md": b"# Guide\n" * 1000}).read_bytes()
    path = tmp_path / "cut.zip"
    path.write_bytes(data[: len(data) - 30])
    assert refusal(path, dest).startswith("not a readable zip (")
