"""Peak memory and time of the hostile inputs of tests/badinputs.py through the real offline encoders, each case in a
fresh process: the 1 x 8000 and 1 x 40000 PNGs (EfficientNet-Lite2) and a long FLAC (lstm-cnn's 10 s crop, and the
frozen MFCC features), plus, for comparison, the FLAC decoded whole as fusent used to.

Prints one line per case: what happened (the problem reported, or the features' shape), seconds, RSS before, peak
RSS added (ru_maxrss, which psutil's RSS cannot see after the fact).

    .venv/bin/python benchmarks/hostile_inputs.py [--minutes 60]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # this checkout's fusent (not whichever is installed), the corpus
CASES = ["png_1x8000", "png_1x40000", "flac_lstm_cnn", "flac_mfcc", "flac_decoded_whole"]


def run_case(case: str, flac: Path) -> dict:
    """One case in this process; returns what to print."""
    import badinputs
    import psutil

    from fusent.data import ProblemReport, Sample, load_audio
    from fusent.encoders import create_audio_encoder, create_image_encoder
    from fusent.features import build_features

    if case.startswith("png"):
        encoder = create_image_encoder("efficientnet-lite2", device="cpu")
        sample = Sample(id=case, image=badinputs.tall_png() if case == "png_1x8000" else badinputs.very_tall_png())
    elif case == "flac_decoded_whole":
        encoder, sample = None, None
    else:
        encoder = create_audio_encoder("lstm-cnn" if case == "flac_lstm_cnn" else "mfcc", max_seconds=10.0)
        sample = Sample(id=case, audio=flac)
    before = psutil.Process().memory_info().rss
    start = time.perf_counter()
    if encoder is None:
        outcome = f"{load_audio(flac).value.shape[0] / 16000:.0f} s of samples"
    else:
        report = ProblemReport()
        table = build_features([sample], {encoder.modality: encoder}, None, report, progress=False)
        features = table.modalities[encoder.modality]
        outcome = ", ".join(report.counts) or f"states {tuple(features.states[0].shape)}"
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "case": case,
        "outcome": outcome,
        "seconds": seconds,
        "rss_mb": before / 2**20,
        "peak_added_mb": (peak - before) / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="length of the generated FLAC")
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)  # the child process's case
    parser.add_argument("--flac", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.flac)))
        return
    import badinputs

    with tempfile.TemporaryDirectory() as tmp:
        flac = badinputs.write_long_flac(Path(tmp) / "long.flac", args.minutes * 60)
        print(f"FLAC of {args.minutes:g} minutes: {flac.stat().st_size / 1024:.0f} KB", file=sys.stderr)
        for case in CASES:
            out = subprocess.run(
                [sys.executable, __file__, "--case", case, "--flac", str(flac)], capture_output=True, text=True
            )
            if out.returncode:
                print(f"{case}: failed\n{out.stderr[-2000:]}")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(
                f"{r['case']:<20} {r['outcome']:<28} {r['seconds']:6.2f} s  RSS {r['rss_mb']:6.0f} MB"
                f"  peak +{r['peak_added_mb']:.0f} MB"
            )


if __name__ == "__main__":
    main()
