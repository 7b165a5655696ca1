"""Property-based requests generated from the service's own OpenAPI document (schemathesis), against every kind of
checkpoint: text + image, text + audio with lstm-cnn, text + image with inception-sa, regression, and an
ensemble. No request
may get a 5xx. Skipped where schemathesis is not installed (it is in the dev extra)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")
pytest.importorskip("fastapi")
pytest.importorskip("multipart")
from conftest import TinyModels  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from test_hostile_model import make_regression_checkpoint, make_trainable_checkpoint  # noqa: E402
from test_predict import make_checkpoint  # noqa: E402

from fusent.ensemble import build_ensemble  # noqa: E402
from fusent.predict import Predictor  # noqa: E402
from fusent.serve import ServeSettings, create_app  # noqa: E402

EXAMPLES = int(os.environ.get("FUSENT_SCHEMATHESIS_EXAMPLES", "30"))  # per operation; raise it for a deeper run


def make_ensemble(root: Path, tiny: TinyModels) -> Path:
    """Two text + image heads averaged (``fusent ensemble``)."""
    members = [make_checkpoint(root, tiny, head) for head in ("native_combine", "native_cat")]
    return build_ensemble(members, root / "ensemble")[0]


DEEP = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
DEEP = settings(DEEP, database=None)

KINDS = {
    "text_image": lambda root, tiny: make_checkpoint(root, tiny),
    "ensemble": make_ensemble,
    "text_audio_lstm_cnn": lambda root, tiny: make_trainable_checkpoint(root, tiny, "weighted", audio=True),
    "text_image_inception_sa": lambda root, tiny: make_trainable_checkpoint(root, tiny, "self_attention", image=True),
    "regression": make_regression_checkpoint,
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_no_generated_request_gets_a_5xx(kind: str, tmp_path: Path, tiny_models: TinyModels):
    predictor = Predictor.from_pretrained(KINDS[kind](tmp_path, tiny_models), use_cache=False, device="cpu")
    app = create_app(predictor, ServeSettings(max_upload_bytes=200_000, max_batch=4))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {"POST /predict", "POST /predict/batch"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(DEEP)
        def no_5xx(case) -> None:
            response = case.call()
            assert response.status_code < 500, (case.as_curl_command(), response.text)

        no_5xx()
