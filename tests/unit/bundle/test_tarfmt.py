"""The tar subset, pinned field by field: header checksum, ustar prefix, base-256 sizes,
bad numbers and names, and the writer's end-of-archive and record padding.

Headers are built by hand here (``header()``), so each field can be set to exactly the
bytes a real tar writer (or an attacker) might put there.
"""

from __future__ import annotations

import io
import tarfile

import pytest

from mk8s.bundle.format import tarfmt
from mk8s.bundle.format.tarfmt import TarFormatError


def header(
    name: bytes = b"artifacts/x",
    *,
    size: bytes = b"00000000012\0",
    prefix: bytes = b"",
    magic: bytes = b"ustar\x0000",
    typeflag: bytes = b"0",
    checksum: str = "{:06o}\0 ",
    tail: bytes = b"",
    extra: dict[int, bytes] | None = None,
) -> bytes:
    """A 512-byte header with the given raw fields and a correct checksum."""
    h = bytearray(512)
    h[0 : len(name)] = name
    h[100:108] = b"0000644\0"
    h[108:116] = b"0000000\0"
    h[116:124] = b"0000000\0"
    h[124 : 124 + len(size)] = size
    h[136:148] = b"00000000001\0"
    h[156:157] = typeflag
    h[257 : 257 + len(magic)] = magic
    h[345 : 345 + len(prefix)] = prefix
    h[500 : 500 + len(tail)] = tail
    for at, value in (extra or {}).items():
        h[at : at + len(value)] = value
    h[148:156] = b" " * 8
    total = sum(h)
    h[148:156] = checksum.format(total).encode("ascii")[:8].ljust(8, b"\0")
    return bytes(h)


def parse(block: bytes) -> tarfmt.Header:
    h = tarfmt.parse_header(block)
    assert h is not None
    return h


# -- reading -----------------------------------------------------------------------------


def test_plain_header() -> None:
    h = parse(header())
    assert (h.name, h.size, h.typeflag, h.kind, h.is_file) == (
        "artifacts/x",
        10,
        b"0",
        "regular file",
        True,
    )


def test_all_zero_block_is_the_end() -> None:
    assert tarfmt.parse_header(b"\0" * 512) is None


@pytest.mark.parametrize("length", [0, 511, 513])
def test_short_or_long_block(length: int) -> None:
    with pytest.raises(TarFormatError) as e:
        tarfmt.parse_header(b"\0" * length)
    assert str(e.value) == "short header block"


def test_header_checksum_is_checked() -> None:
    good = bytearray(header())
    good[5] ^= 0x01
    with pytest.raises(TarFormatError) as e:
        tarfmt.parse_header(bytes(good))
    assert str(e.value) == "header checksum does not match (not a tar header)"
    # Random data with a plausible shape is not a header either.
    with pytest.raises(TarFormatError, match="checksum"):
        tarfmt.parse_header(b"appended junk".ljust(512, b"0"))


def test_checksum_field_forms() -> None:
    """Writers differ: '%06o\\0 ' (GNU), '%07o\\0' (old), eight digits without a
    terminator; the checksum of a header full of high bytes needs six digits."""
    for form in ("{:06o}\0 ", "{:07o}\0", "{:08o}", " {:06o}\0"):
        assert parse(header(checksum=form)).size == 10
    big = header(name=("é" * 50).encode(), prefix=("é" * 77).encode())
    assert int(big[148:154], 8) >= 0o100000
    assert parse(big).name == "é" * 77 + "/" + "é" * 50


def test_ustar_prefix_is_part_of_the_name() -> None:
    """GNU tar extracts prefix/name; a reader that ignored the prefix would check a
    different name than the one that lands on disk."""
    assert parse(header(name=b"x", prefix=b"artifacts")).name == "artifacts/x"
    # A prefix of the full 155 bytes has no terminator; bytes 500.. are not part of it.
    long_prefix = b"p" * 155
    h = parse(header(name=b"x", prefix=long_prefix, tail=b"GARBAGE"))
    assert h.name == "p" * 155 + "/x"
    # Python's tarfile (like GNU tar) agrees.
    info = tarfile.TarInfo.frombuf(header(name=b"x", prefix=b"artifacts"), "utf-8", "strict")
    assert info.name == "artifacts/x"


@pytest.mark.parametrize("magic", [b"ustar  \0", b"\0" * 8], ids=["gnu-magic", "v7-no-magic"])
def test_no_prefix_without_ustar_magic(magic: bytes) -> None:
    """GNU and v7 headers use bytes 345.. for other things (GNU: atime, ctime)."""
    h = parse(header(name=b"x", magic=magic, extra={345: b"00000000001\0"}))
    assert h.name == "x"


def test_name_of_exactly_100_bytes() -> None:
    name = b"artifacts/" + b"n" * 90
    assert len(name) == 100
    assert parse(header(name=name)).name == name.decode()


def test_non_utf8_name_is_a_format_error() -> None:
    with pytest.raises(TarFormatError) as e:
        tarfmt.parse_header(header(name=b"artifacts/\xff\xfe"))
    assert str(e.value) == "member name is not UTF-8"
    with pytest.raises(TarFormatError, match="not UTF-8"):
        tarfmt.parse_header(header(name=b"x", prefix=b"\xc3"))


@pytest.mark.parametrize(
    "field, size",
    [
        (b"00000000012\0", 10),
        (b"00000000012 ", 10),
        (b"       12\0\0\0", 10),
        (b"12\0\0\0\0\0\0\0\0\0\0", 10),
        (b"000000000012", 10),  # twelve digits, no terminator
        (b"\0" * 12, 0),
        (b"10000000000\0", 8**10),
        (b"77777777777\0", 8**11 - 1),
        (bytes([0x80]) + (8**11).to_bytes(11, "big"), 8**11),
        (bytes([0x80]) + (2**81 + 5).to_bytes(11, "big"), 2**81 + 5),
    ],
    ids=[
        "octal",
        "space-terminated",
        "leading-spaces",
        "nul-padded",
        "twelve-digits",
        "empty",
        "leading-one",
        "largest-octal",
        "base256",
        "base256-high-bytes",
    ],
)
def test_size_fields(field: bytes, size: int) -> None:
    assert parse(header(size=field)).size == size


@pytest.mark.parametrize(
    "field",
    [
        b"X0000000012\0",
        b"0000000001A\0",
        b"0000 000012\0",
        b"00000000018\0",
        # Python's int() takes these; tar does not (GNU tar reports an error).
        b"-0000000012\0",
        b"+0000000012\0",
        b"0o000000012\0",
        b"00000_00012\0",
        b"\t0000000012\0",  # the writer never emits whitespace but spaces
    ],
    ids=[
        "letter-first",
        "letter-last",
        "inner-space",
        "digit-8",
        "minus",
        "plus",
        "0o",
        "underscore",
        "tab",
    ],
)
def test_bad_octal_field_is_a_format_error(field: bytes) -> None:
    with pytest.raises(TarFormatError) as e:
        tarfmt.parse_header(header(size=field))
    assert str(e.value) == f"bad number field {field!r}"


@pytest.mark.parametrize("first", [0xFF, 0x81, 0xC0], ids=["negative", "0x81", "0xc0"])
def test_negative_or_oversized_base256_is_a_format_error(first: int) -> None:
    with pytest.raises(TarFormatError) as e:
        tarfmt.parse_header(header(size=bytes([first]) + b"\0" * 10 + b"\x01"))
    assert str(e.value) == "negative or oversized base-256 number"


def test_member_kinds_are_named() -> None:
    kinds = {
        b"\0": "regular file",
        b"1": "hard link",
        b"2": "symbolic link",
        b"5": "directory",
        b"x": "pax extended header",
        b"L": "GNU long name",
        b"Z": "member of unknown type b'Z'",
    }
    for flag, kind in kinds.items():
        h = parse(header(typeflag=flag))
        assert h.kind == kind
        assert h.is_file == (kind == "regular file")


# -- writing -----------------------------------------------------------------------------


def test_file_header_fields() -> None:
    h = tarfmt.file_header("artifacts/rke2.tar.gz", 1234, 1_767_323_045)
    assert h[0:21] == b"artifacts/rke2.tar.gz" and h[21:100] == b"\0" * 79
    assert h[100:108] == b"0000644\0"
    assert h[108:116] == b"0000000\0" and h[116:124] == b"0000000\0"
    assert h[124:136] == b"%011o\0" % 1234
    assert h[136:148] == b"%011o\0" % 1_767_323_045
    assert h[148:156] == b"%06o\0 " % (sum(h[:148]) + 256 + sum(h[156:]))
    assert h[156:157] == b"0"
    assert h[157:257] == b"\0" * 100
    assert h[257:265] == b"ustar\x0000"
    assert h[265:329] == b"\0" * 64
    assert h[329:345] == b"0000000\x000000000\0"
    assert h[345:] == b"\0" * 167
    info = tarfile.TarInfo.frombuf(h, "utf-8", "strict")
    assert (info.name, info.size, info.mtime, info.mode, info.uid, info.gid) == (
        "artifacts/rke2.tar.gz",
        1234,
        1_767_323_045,
        0o644,
        0,
        0,
    )
    assert parse(h).size == 1234


@pytest.mark.parametrize("size", [8**11 - 1, 8**11, 2**40, 2**80 + 7])
def test_size_field_octal_up_to_its_limit_then_base256(size: int) -> None:
    h = tarfmt.file_header("artifacts/big", size, 1)
    if size < 8**11:
        assert h[124:136] == b"%011o\0" % size
    else:
        assert h[124:136] == bytes([0x80]) + size.to_bytes(11, "big")
    assert parse(h).size == size
    assert tarfile.TarInfo.frombuf(h, "utf-8", "strict").size == size


def test_file_header_name_limit() -> None:
    ok = "artifacts/" + "n" * 90
    assert parse(tarfmt.file_header(ok, 0, 0)).name == ok
    with pytest.raises(ValueError) as e:
        tarfmt.file_header(ok + "n", 0, 0)
    assert str(e.value) == f"member name {ok + 'n'!r} is longer than 100 bytes"
    with pytest.raises(UnicodeEncodeError):
        tarfmt.file_header("artifacts/é", 0, 0)


def test_mtime_that_does_not_fit_is_refused() -> None:
    assert parse(tarfmt.file_header("a", 0, 8**11 - 1)).name == "a"
    with pytest.raises(ValueError) as e:
        tarfmt.file_header("a", 0, 8**11)
    assert str(e.value) == f"{8**11} does not fit in 11 octal digits"


@pytest.mark.parametrize("written", [0, 512, 1536, 9216, 10240 - 1024, 10240, 10752, 123 * 512])
def test_end_padding_completes_a_record(written: int) -> None:
    pad = tarfmt.end_padding(written)
    assert pad == b"\0" * len(pad)
    assert len(pad) >= 1024 and (written + len(pad)) % tarfmt.RECORD == 0
    assert len(pad) < 1024 + tarfmt.RECORD


def test_padding() -> None:
    assert [tarfmt.padding(n) for n in (0, 1, 511, 512, 513)] == [0, 511, 1, 0, 511]


def test_written_archive_reads_back_with_tarfile() -> None:
    out = io.BytesIO()
    data = b"hello"
    out.write(tarfmt.file_header("artifacts/h", len(data), 7))
    out.write(data + b"\0" * tarfmt.padding(len(data)))
    out.write(tarfmt.end_padding(out.tell()))
    raw = out.getvalue()
    assert len(raw) == tarfmt.RECORD
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        (info,) = tf.getmembers()
        f = tf.extractfile(info)
        assert f is not None and f.read() == data
