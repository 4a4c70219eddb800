"""How often the functional fingerprint merges programs that compute different updates.

    python benchmarks/fingerprint_audit.py RUNS.db [MORE.db ...]

Takes every distinct optimizer program recorded in the stores, groups each store's
programs by fingerprint in birth order (as the search's cache does: a later program is
served from the first one with its fingerprint), and runs every merged program and the
one it was merged into on an independent, longer audit probe: another seed and layout,
ten steps instead of four, gradient rows from 1e-4 to 10 and every value with its own
magnitude over six decades. A merge the audit probe tells apart is a false merge; the
table says in how many of the audit probe's values the two differ, since two sign-like
updates that differ only in a tiny corner of input space are near-equivalent while ones
that differ in a tenth of their values are not. The fingerprint in use is compared with a
small probe (3 gradient rows, 17 values, one magnitude per row). Layer programs in the
stores are audited the same way, on the layer analysis's verification probes and one
more tensor shape.
"""

from __future__ import annotations

import argparse
import sqlite3
import time
from collections import defaultdict

import torch

from evoprog.programs import fingerprint as fp
from evoprog.programs.layer_analysis import VERIFY_PROBES, make_layer_probe, run_layer
from evoprog.programs.layer_space import LayerSpace
from evoprog.programs.ops import Layout
from evoprog.programs.program import Program, parse_program
from evoprog.programs.space import OptimizerSpace as S

AUDIT = fp.make_probe(layout=Layout(((5, 7), (9,), (3, 4), (6, 6))),
                      scales=(1e-4, 1e-2, 1.0, 10.0), steps=10, seed=4242,
                      element_scales=(1e-5, 10.0))
PROBES = {
    "small probe (3 rows x 17 values)": fp.make_probe(layout=Layout(((3, 4), (5,))),
                                                      scales=(1e-3, 1.0, 1e2)),
    "fingerprint in use": fp.PROBE,
}


LAYER_AUDIT = (*VERIFY_PROBES, make_layer_probe((7, 5, 2, 3), 5, seed=99))


def corpus(paths: list[str], family: str) -> list[tuple[str, Program]]:
    """(store, pruned program) for each distinct program text, in birth order."""
    space = S if family == "optimizer" else LayerSpace
    programs = []
    for path in paths:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            rows = conn.execute(
                "SELECT p.text FROM individuals i JOIN programs p ON p.hash = i.program_hash "
                "JOIN runs r ON r.id = i.run_id WHERE r.family = ? "
                "ORDER BY i.run_id, i.birth", [family]).fetchall()
        seen: set[str] = set()
        for (text,) in rows:
            if text not in seen:
                seen.add(text)
                programs.append((path, space.prune(parse_program(text))))
    return programs


def layer_outputs(program: Program) -> torch.Tensor:
    return torch.cat([run_layer(program, probe).flatten() for probe in LAYER_AUDIT])


def audit_row(name: str, programs: list[tuple[str, Program]], key, audit: list[torch.Tensor],
              ) -> str:
    """One table row: group by ``key(program)`` per store, check merges on ``audit``."""
    start = time.process_time()
    classes: dict[tuple[str, object], list[int]] = defaultdict(list)
    for i, (path, program) in enumerate(programs):
        classes[(path, key(program))].append(i)
    micros = (time.process_time() - start) / max(len(programs), 1) * 1e6
    merged, apart = 0, [0, 0, 0]
    for members in classes.values():
        first = audit[members[0]]
        for j in members[1:]:
            merged += 1
            close = torch.isclose(audit[j], first, rtol=1e-4, atol=1e-10, equal_nan=True)
            if not close.all():
                share = 1.0 - close.double().mean().item()
                apart[0 if share < 0.01 else 1 if share < 0.1 else 2] += 1
    return (f"| {name} | {len(classes)} | {merged} | {sum(apart)} | "
            f"{apart[0]} / {apart[1]} / {apart[2]} | {micros:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dbs", nargs="+", help="evoprog stores with optimizer runs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    optimizers = corpus(args.dbs, "optimizer")
    layers = corpus(args.dbs, "layer")
    print(f"{len(optimizers)} distinct optimizer and {len(layers)} distinct layer programs "
          f"from {len(args.dbs)} store(s)")
    print("| probe | classes | merged | told apart by the audit | of them, values that "
          "differ: < 1% / 1-10% / >= 10% | us per program |")
    print("|---|---|---|---|---|---|")
    if optimizers:
        audit = [fp.updates(p, S.state, AUDIT) for _, p in optimizers]
        for name, probe in PROBES.items():
            def key(p: Program, probe: fp.Probe = probe) -> bytes:
                return fp.quantized_bytes(fp.updates(p, S.state, probe))[0]
            print(audit_row(f"optimizer: {name}", optimizers, key, audit))
    if layers:
        print(audit_row("layer: fingerprint in use", layers, LayerSpace.fingerprint,
                        [layer_outputs(p) for _, p in layers]))


if __name__ == "__main__":
    main()
