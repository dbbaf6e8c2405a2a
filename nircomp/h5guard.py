"""Byte-level checks on a `.nir` file that must run before libhdf5 reads it.

libhdf5 trusts some on-disk lengths and can hang on a damaged file instead of failing: it walks a
global heap collection (where variable-length strings such as node types and edges live) object by
object, and an object whose length field reads 0 stops the walk from advancing. One flipped byte
does this. `damaged_global_heap` finds such a collection first, so `load` can refuse the file.
"""

from __future__ import annotations

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_HEADER = 16  # collection header and object header size when lengths are 8 bytes
_MIN_COLLECTION = 4096  # libhdf5 never writes a smaller collection


def _lengths_size(data: bytes) -> int | None:
    """The superblock's "size of lengths" (None when the superblock is not at byte 0)."""
    if data[:8] != HDF5_SIGNATURE or len(data) < 16:
        return None
    return data[14] if data[8] in (0, 1) else data[10]


def damaged_global_heap(data: bytes) -> int | None:
    """The byte offset of the first global heap collection whose objects do not tile it, else None.

    In a valid collection every object (header + data rounded up to 8 bytes; the free-space object
    with index 0 counts its header in its length) moves the walk forward and ends inside the
    collection. Only files with 8-byte lengths (what h5py and nir write) are checked.
    """
    if _lengths_size(data) != 8:
        return None
    at = data.find(b"GCOL")
    while at >= 0:
        head = data[at + 4:at + _HEADER]
        size = int.from_bytes(head[4:], "little") if len(head) == 12 else 0
        if head[:4] == b"\x01\0\0\0" and _MIN_COLLECTION <= size and at + size <= len(data):
            p = _HEADER
            while p + _HEADER <= size:
                obj = data[at + p:at + p + _HEADER]
                index, length = int.from_bytes(obj[:2], "little"), int.from_bytes(obj[8:], "little")
                need = _HEADER + -(-length // 8) * 8 if index else length
                if need == 0 or p + need > size:
                    return at
                p += need
        at = data.find(b"GCOL", at + 4)
    return None
