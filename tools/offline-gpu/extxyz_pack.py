#!/usr/bin/env python3
"""Pack an extended-XYZ file whose per-atom columns are a symbol and float32 values printed with 8 decimals (the
SCAN water/ice set) into a smaller, exact form, and write the text back from it.

The set's 90 MB of text is 30 MB gzipped, 23 MB with xz; its numbers were float32 before they were printed, so
one float32 per number (plus the comment lines) holds them all: 16 MB with xz. `unpack` prints them again the way
the file printed them and checks the result against the SHA-256 of the original text, so the copy is the same file
byte for byte, or the script fails. Needs numpy only (no ASE, no petmd): it runs on a machine where petmd is not
installed yet.

    python extxyz_pack.py pack ../shared/data/water-scan/water-scan.extxyz.gz .offline/train/water-scan.pack.npz
    python extxyz_pack.py unpack .offline/train/water-scan.pack.npz /tmp/data/water-scan.extxyz.gz
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import lzma
import sys

import numpy as np

ATOM_FORMAT = "{:<2s}" + " {:16.8f}" * 6  # how the set's writer (ASE) printed each atom line


def _atom_line(symbol: str, values) -> str:
    return ATOM_FORMAT.format(symbol, *values) + "\n"


def pack(source: str, target: str) -> None:
    opener = gzip.open if source.endswith(".gz") else open
    with opener(source, "rb") as fh:
        text = fh.read()
    digest = hashlib.sha256(text).hexdigest()
    headers, counts, symbols, values = [], [], [], []
    lines = io.StringIO(text.decode())
    symbol_codes = {}
    while True:
        count_line = lines.readline()
        if not count_line:
            break
        n = int(count_line)
        counts.append(n)
        headers.append(lines.readline())
        for _ in range(n):
            line = lines.readline()
            parts = line.split()
            if len(parts) != 7:
                sys.exit(f"{source}: atom line {line!r} has {len(parts)} columns; this packer reads symbol + 6 numbers")
            row = np.array(parts[1:], dtype=np.float32)
            if _atom_line(parts[0], row.astype(np.float64)) != line:
                sys.exit(f"{source}: line {line!r} is not a float32 printed with 8 decimals; pack cannot be exact")
            symbols.append(symbol_codes.setdefault(parts[0], len(symbol_codes)))
            values.append(row)
    # byte planes per column (sign/exponent bytes apart from mantissa bytes) compress to 16 MB instead of 19
    planes = np.stack(values).view(np.uint8).reshape(-1, 6, 4).transpose(1, 2, 0)
    payload = lzma.compress(np.ascontiguousarray(planes).tobytes(), preset=9)
    np.savez(
        target,
        sha256=digest,
        counts=np.array(counts, dtype=np.int32),
        headers=np.frombuffer(lzma.compress("".join(headers).encode(), preset=9), dtype=np.uint8),
        symbols=np.array(symbols, dtype=np.uint8),
        symbol_names=np.array(list(symbol_codes)),
        values=np.frombuffer(payload, dtype=np.uint8),
    )
    print(f"{source}: {len(counts)} frames, {len(symbols)} atoms → {target}")


def unpack(source: str, target: str) -> None:
    data = np.load(source)
    counts = data["counts"]
    headers = lzma.decompress(data["headers"].tobytes()).decode().splitlines(keepends=True)
    names = [str(s) for s in data["symbol_names"]]
    symbols = data["symbols"]
    planes = np.frombuffer(lzma.decompress(data["values"].tobytes()), dtype=np.uint8).reshape(6, 4, -1)
    values = np.ascontiguousarray(planes.transpose(2, 0, 1)).view(np.float32).reshape(-1, 6).astype(np.float64)
    out, atom = [], 0
    for n, header in zip(counts, headers):
        out.append(f"{n}\n")
        out.append(header)
        out.extend(_atom_line(names[symbols[k]], values[k]) for k in range(atom, atom + n))
        atom += n
    text = "".join(out).encode()
    if hashlib.sha256(text).hexdigest() != str(data["sha256"]):
        sys.exit(f"{source}: the unpacked text differs from the packed file (SHA-256 mismatch); nothing written")
    opener = gzip.open if target.endswith(".gz") else open
    kwargs = {"compresslevel": 1} if target.endswith(".gz") else {}
    with opener(target, "wb", **kwargs) as fh:
        fh.write(text)
    print(f"{source} → {target}: {len(counts)} frames, {atom} atoms, SHA-256 verified")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["pack", "unpack"])
    parser.add_argument("source")
    parser.add_argument("target")
    args = parser.parse_args()
    (pack if args.action == "pack" else unpack)(args.source, args.target)


if __name__ == "__main__":
    main()
