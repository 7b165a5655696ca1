"""Score a manifest the way a cluster engine does: ``fusent.stream.ManifestScorer`` called on batches of columns.

``--engine local`` (the default; nothing beyond fusent needed) reads the CSV in chunks of ``--batch-size`` rows
and calls the scorer on each chunk as a dict of columns: exactly the call Ray Data's ``map_batches`` makes on each
block (``batch_format="numpy"``), and what Spark's ``mapInPandas`` makes through ``frame.to_dict("list")``.
``--engine ray`` runs the same class on Ray Data (``pip install 'ray[data]'``).

    python examples/cluster_scoring.py CHECKPOINT posts.csv [--out scores.csv] [--batch-size 256] [--engine local]

The same on Spark (each executor builds one scorer and reuses it for every batch of its partitions)::

    from fusent.stream import ManifestScorer
    import pandas as pd

    def score(frames):
        scorer = ManifestScorer(CHECKPOINT, base=MANIFEST_FOLDER)
        for frame in frames:
            yield pd.DataFrame(scorer(frame.to_dict("list")))

    (spark.read.csv(MANIFEST, header=True)
        .mapInPandas(score, "id string, label string, score double")
        .write.csv(OUT))
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Iterator
from pathlib import Path

from fusent.stream import ManifestScorer


def csv_chunks(path: Path, rows: int) -> Iterator[dict[str, list[str]]]:
    """The manifest ``rows`` rows at a time, as columns (the shape an engine hands to ``map_batches``)."""
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        chunk: list[dict[str, str]] = []
        for record in reader:
            chunk.append(record)
            if len(chunk) == rows:
                yield {c: [r[c] for r in chunk] for c in reader.fieldnames or []}
                chunk = []
        if chunk:
            yield {c: [r[c] for r in chunk] for c in reader.fieldnames or []}


def run_local(args: argparse.Namespace) -> None:
    scorer = ManifestScorer(args.checkpoint, base=args.manifest.parent)
    out = open(args.out, "w", newline="") if args.out else sys.stdout
    writer = None
    for batch in csv_chunks(args.manifest, args.batch_size):
        scored = scorer(batch)
        if writer is None:
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(list(scored))
        writer.writerows(zip(*scored.values(), strict=True))
        out.flush()
    if out is not sys.stdout:
        out.close()
    print(scorer.report.summary(), file=sys.stderr)


def run_ray(args: argparse.Namespace) -> None:
    import ray

    ray.init(num_cpus=args.workers + 1, include_dashboard=False, log_to_driver=False)  # + 1 for the CSV reader
    scored = ray.data.read_csv(str(args.manifest)).map_batches(
        ManifestScorer,
        fn_constructor_kwargs={"checkpoint": str(args.checkpoint), "base": str(args.manifest.parent)},
        batch_size=args.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=args.workers),  # actors, each loading the Predictor once
    )
    rows = scored.take_all()  # a cluster job would .write_csv / .write_parquet to shared storage instead
    out = open(args.out, "w", newline="") if args.out else sys.stdout
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "label", "score"])
    writer.writerows((r["id"], r["label"], r["score"]) for r in rows)
    if out is not sys.stdout:
        out.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("manifest", type=Path, help="A CSV manifest: id,text,image,audio (paths relative to it)")
    parser.add_argument("--out", type=Path, help="CSV of id,label,score (default: stdout)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--engine", choices=["local", "ray"], default="local")
    parser.add_argument("--workers", type=int, default=1, help="Ray actors (each loads the model once)")
    args = parser.parse_args()
    run_ray(args) if args.engine == "ray" else run_local(args)


if __name__ == "__main__":
    main()
