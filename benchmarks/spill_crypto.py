"""What encrypting spill files costs: spill + restore of one object, sealed
(AES-GCM, as the agent does it) against plain writes and reads of the same
bytes with the same file flags, in one run.

    python benchmarks/spill_crypto.py [--mb 100] [--repeat 5] [--dir DIR]

Both sides go from and into an anonymous shared mapping, as the store's
region is, through the page cache (no fsync on either). Prints the best of
`--repeat` rounds of each and their ratio (sealed time / plain time).
"""

from __future__ import annotations

import argparse
import mmap
import os
import shutil
import tempfile
import time

from manta._private.node.spill import SpillFiles


def plain_round(directory: str, oid: bytes, src: memoryview, dst: memoryview) -> float:
    path = os.path.join(directory, oid.hex())
    t = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with open(fd, "wb", buffering=0) as f:
        view = src
        while view:
            view = view[f.write(view) or 0 :]
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with open(fd, "rb", buffering=0) as f:
        got = 0
        while got < len(dst):
            got += f.readinto(dst[got:]) or 0
    os.unlink(path)
    return time.perf_counter() - t


def sealed_round(files: SpillFiles, oid: bytes, src: memoryview, dst: memoryview) -> float:
    t = time.perf_counter()
    files.write(oid, src)
    files.read_into(oid, dst)
    files.remove(oid)
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", default=None, help="where to write (default: a temporary directory)")
    args = parser.parse_args()
    size = args.mb << 20
    region = mmap.mmap(-1, 2 * size)
    view = memoryview(region)
    src, dst = view[:size], view[size:]
    src[:] = os.urandom(size)
    base = tempfile.mkdtemp(prefix="spillbench-", dir=args.dir)
    try:
        files = SpillFiles(os.path.join(base, "sealed"))
        plain_dir = os.path.join(base, "plain")
        os.mkdir(plain_dir, 0o700)
        oid = os.urandom(20)
        plain, sealed = [], []
        for _ in range(args.repeat):  # interleaved, so drift hits both alike
            plain.append(plain_round(plain_dir, oid, src, dst))
            sealed.append(sealed_round(files, oid, src, dst))
        assert dst == src, "the restored bytes differ"
        files.close()
        p, s = min(plain), min(sealed)
        print(f"spill + restore of {args.mb} MB, best of {args.repeat}")
        print(f"  plain:  {p * 1e3:8.1f} ms  ({2 * size / p / 1e9:.2f} GB/s moved)")
        print(f"  sealed: {s * 1e3:8.1f} ms  ({2 * size / s / 1e9:.2f} GB/s moved)")
        print(f"  ratio sealed/plain: {s / p:.2f}")
    finally:
        shutil.rmtree(base, ignore_errors=True)
        del src, dst, view
        region.close()


if __name__ == "__main__":
    main()
