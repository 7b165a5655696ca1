"""The architecture's layering, checked in a fresh interpreter: inference (predict, serve) sits below the training
flow and the trainer, and the old module name ``fusent.pipeline`` is the training flow itself."""

from __future__ import annotations

import subprocess
import sys

TRAINING = (
    "fusent.train_flow",
    "fusent.training",
    "fusent.runs",
    "fusent.calibration",
    "fusent.tune",
    "fusent.compare",
)


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint('\\n'.join(m for m in sys.modules if m.startswith('fusent')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_inference_does_not_import_training():
    loaded = _loaded_after("import fusent.predict, fusent.ensemble")
    assert "fusent.predict" in loaded and "fusent.model" in loaded
    assert not loaded & set(TRAINING), sorted(loaded & set(TRAINING))


def test_training_flow_is_above_inference_helpers():
    loaded = _loaded_after("import fusent.train_flow")
    assert "fusent.encoders.build" in loaded and "fusent.predict" not in loaded


def test_old_pipeline_name_is_the_training_flow():
    import fusent.pipeline
    import fusent.train_flow

    assert fusent.pipeline is fusent.train_flow and fusent.pipeline.fit is fusent.train_flow.fit
