"""Read the scalars back from a run's TensorBoard event files (no TensorFlow needed).

A resumed run uses it to skip steps already written (curves without duplicated steps);
`experiments.ablate` and `experiments.bench_train` use it for learning curves.
"""
from __future__ import annotations

import glob
import os
import struct


def read_scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
    """All scalars in the event files of ``logdir`` (not sub-directories), in file order:
    ``{tag: [(step, value), ...]}``. A truncated last record (a killed writer) is ignored."""
    from tensorboardX.proto.event_pb2 import Event
    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
        with open(path, "rb") as f:
            data = f.read()
        i = 0
        while i + 12 <= len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            if i + 12 + n + 4 > len(data):
                break
            ev = Event.FromString(data[i + 12:i + 12 + n])
            i += 12 + n + 4
            for v in ev.summary.value:
                if v.HasField("simple_value"):
                    out.setdefault(v.tag, []).append((int(ev.step), float(v.simple_value)))
    return out


def last_steps(logdir: str) -> dict[str, int]:
    """``{tag: largest step written}`` (what a resumed run must not write again)."""
    return {t: max(s for s, _ in v) for t, v in read_scalars(logdir).items()}
