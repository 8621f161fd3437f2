"""The Python SDK for `crops:policy@0.2.0`: a placement's packed candidates
as the contract's plain `worker` records (the bindings' own `Worker`).

    import crops_policy

    def place(self, req, candidates):
        for i, w in enumerate(crops_policy.workers(candidates)):
            ...  # w.id, w.platform, w.images, w.labels, w.memory_free, ...

Build with componentize-py, this directory on its path
(`-p policies/sdk/python`). The layout it decodes is
policies/sdk/README.md.
"""

import struct
from typing import Dict, List, Tuple

from wit_world.imports.types import Candidates, Profile, Worker, WorkerMode

# Bytes of one worker entry.
ENTRY = 96
# Five text refs, the labels and images runs, three u64, three u32, mode,
# security floor, flags and a zero byte.
_ENTRY = struct.Struct("<14I3Q3I3Bx")
_REF = struct.Struct("<2I")
_PROFILES = [Profile.OPEN, Profile.STANDARD, Profile.STRICT, Profile.OFFLINE]
_MODES = [WorkerMode.BYOM, WorkerMode.FLEET]


def workers(candidates: Candidates) -> List[Worker]:
    """Every candidate, in order, as a plain `Worker`."""
    count, text, table = candidates.count, candidates.text, bytes(candidates.table)
    if count * ENTRY > len(table):
        raise ValueError(f"{count} workers need {count * ENTRY} table bytes; {len(table)} were sent")
    if text.isascii():
        piece = lambda start, n: text[start : start + n]  # noqa: E731
    else:
        raw = text.encode()
        piece = lambda start, n: raw[start : start + n].decode()  # noqa: E731
    strings: Dict[Tuple[int, int], str] = {}

    def string(start: int, n: int) -> str:
        key = (start, n)
        s = strings.get(key)
        if s is None:
            s = strings[key] = piece(start, n)
        return s

    refs: Dict[Tuple[int, int], List[str]] = {}

    def run(at: int, n: int) -> List[str]:
        key = (at, n)
        found = refs.get(key)
        if found is None:
            found = refs[key] = [string(*_REF.unpack_from(table, at + 8 * i)) for i in range(n)]
        return found

    out = []
    for f in _ENTRY.iter_unpack(table[: count * ENTRY]):
        flags = f[22]
        labels = run(f[10], 2 * f[11])
        out.append(
            Worker(
                id=string(f[0], f[1]),
                mode=_MODES[min(f[20], 1)],
                tenant_id=string(f[2], f[3]),
                platform=string(f[4], f[5]),
                arch=string(f[6], f[7]),
                region=string(f[8], f[9]),
                labels=list(zip(labels[0::2], labels[1::2])),
                cpu_count=f[17],
                memory_total=f[14],
                memory_free=f[15],
                disk_free=f[16] if flags & 8 else None,
                cpu_load_permille=f[18],
                containers_running=f[19],
                images=list(run(f[12], f[13])),
                # An unknown profile is the strongest (it rejects the most).
                security_floor=_PROFILES[min(f[21], 3)],
                drained=bool(flags & 1),
                cordoned=bool(flags & 2),
                online=bool(flags & 4),
            )
        )
    return out
