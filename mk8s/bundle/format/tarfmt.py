"""The small, strict subset of tar that bundles use.

Writing: ustar headers for regular files only, fixed owner (0/0, no names), mode 0644,
a given mtime; sizes too big for octal use the GNU base-256 form, which GNU tar and
bsdtar read. Reading: the same subset, and every other member type is named so that a
rejection can say what it found.
"""

from __future__ import annotations

from dataclasses import dataclass

BLOCK = 512
RECORD = 20 * BLOCK
END_OF_ARCHIVE = b"\0" * (2 * BLOCK)

_TYPE_NAMES = {
    b"1": "hard link",
    b"2": "symbolic link",
    b"3": "character device",
    b"4": "block device",
    b"5": "directory",
    b"6": "FIFO",
    b"7": "contiguous file",
    b"x": "pax extended header",
    b"g": "pax global header",
    b"L": "GNU long name",
    b"K": "GNU long link name",
}


class TarFormatError(ValueError):
    """A header that is not a valid tar header of the subset we accept."""


def _octal(value: int, width: int) -> bytes:
    digits = f"{value:0{width - 1}o}".encode("ascii")
    if len(digits) > width - 1:
        raise ValueError(f"{value} does not fit in {width - 1} octal digits")
    return digits + b"\0"


def _size_field(size: int) -> bytes:
    if size < 8**11:
        return _octal(size, 12)
    # GNU base-256: high bit set, big-endian in the remaining 95 bits.
    return bytes([0x80]) + size.to_bytes(11, "big")


def file_header(name: str, size: int, mtime: int) -> bytes:
    """A 512-byte ustar header for a regular file (raises ValueError if name > 100 bytes)."""
    raw_name = name.encode("ascii")
    if len(raw_name) > 100:
        raise ValueError(f"member name {name!r} is longer than 100 bytes")
    h = bytearray(BLOCK)
    h[0 : len(raw_name)] = raw_name
    h[100:108] = _octal(0o644, 8)
    h[108:116] = _octal(0, 8)
    h[116:124] = _octal(0, 8)
    h[124:136] = _size_field(size)
    h[136:148] = _octal(mtime, 12)
    h[148:156] = b" " * 8
    h[156:157] = b"0"
    h[257:263] = b"ustar\0"
    h[263:265] = b"00"
    h[329:337] = _octal(0, 8)
    h[337:345] = _octal(0, 8)
    checksum = sum(h)
    h[148:156] = f"{checksum:06o}".encode("ascii") + b"\0 "
    return bytes(h)


def padding(size: int) -> int:
    """Bytes of zero padding after a member's data of ``size`` bytes."""
    return -size % BLOCK


def end_padding(written: int) -> bytes:
    """End-of-archive blocks plus padding to a full record, given bytes written so far."""
    total = written + len(END_OF_ARCHIVE)
    return END_OF_ARCHIVE + b"\0" * (-total % RECORD)


@dataclass(frozen=True)
class Header:
    name: str
    size: int
    typeflag: bytes

    @property
    def kind(self) -> str:
        if self.typeflag in (b"0", b"\0"):
            return "regular file"
        return _TYPE_NAMES.get(self.typeflag, f"member of unknown type {self.typeflag!r}")

    @property
    def is_file(self) -> bool:
        return self.typeflag in (b"0", b"\0")


def _parse_number(field: bytes) -> int:
    if field and field[0] & 0x80:
        if field[0] != 0x80:
            raise TarFormatError("negative or oversized base-256 number")
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    # Octal digits only: int() would also take a sign, "0o" and "_", which tar does not.
    if text.strip(b"01234567"):
        raise TarFormatError(f"bad number field {field!r}")
    return int(text, 8)


def parse_header(block: bytes) -> Header | None:
    """Parse one header block; None for an all-zero block (end of archive).

    Raises TarFormatError for a block that is not a valid header (bad checksum etc).
    """
    if len(block) != BLOCK:
        raise TarFormatError("short header block")
    if block == b"\0" * BLOCK:
        return None
    stored = _parse_number(block[148:156])
    computed = sum(block[:148]) + 8 * 32 + sum(block[156:])
    if stored != computed:
        raise TarFormatError("header checksum does not match (not a tar header)")
    raw_name = block[0:100].split(b"\0", 1)[0]
    if block[257:263] == b"ustar\0":
        prefix = block[345:500].split(b"\0", 1)[0]
        if prefix:
            raw_name = prefix + b"/" + raw_name
    try:
        name = raw_name.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TarFormatError("member name is not UTF-8") from e
    return Header(name=name, size=_parse_number(block[124:136]), typeflag=block[156:157])
