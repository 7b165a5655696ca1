"""``fusent serve``: a REST service and a small web page over a Predictor (FastAPI + uvicorn).

Only this module imports FastAPI, so the rest of fusent works without the ``serve`` extra. Model calls run in a
bounded pool of worker threads, off the event loop; a request waits for a free worker at most ``timeout_s``
(queue included), and work is handed to a worker only when one is free, so a request that gave up never runs.
Bad input is answered with a 4xx and a JSON body ``{"error": kind, "detail": message, "field": name}``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from . import __version__
from .model_card import model_card
from .predict import InputError, Prediction, Predictor

log = logging.getLogger("fusent")
T = TypeVar("T")

#: HTTP status of each InputError kind (anything else about the input is a 422).
_STATUS = {"too_large_image": 413, "payload_too_large": 413, "text_too_long": 413, "batch_too_large": 413}
#: Status of an answer to a client that left before it came: logged, never sent (nginx's "client closed request").
_CLIENT_GONE = 499
_STATUS.update(too_long_video=413, too_large_video=413, video_unsupported=415)  # clips: limits; no PyAV here


@dataclass
class ServeSettings:
    """Limits of the service; every one is a ``fusent serve`` option."""

    max_upload_bytes: int = 10 * 1024 * 1024  # per request body (base64 in JSON counts at its encoded size)
    max_image_pixels: int = 40_000_000  # checked from the image header, before decoding (decompression bombs)
    max_text_chars: int = 10_000
    max_batch: int = 64
    timeout_s: float = 30.0  # queue wait + model time of one request
    body_timeout_s: float = 30.0  # longest wait for the next piece of a request body (a stalled client holds a socket)
    workers: int = 1  # model calls at once; each uses torch's intra-op threads
    max_queue: int = 512  # requests waiting for a worker before new ones get 503
    image_types: tuple[str, ...] = (
        "image/jpeg",
        "image/png",
        "image/webp",
        "image/gif",
        "image/bmp",
        "image/tiff",
        "application/octet-stream",  # a file without a known extension: the decoder decides
    )
    audio_types: tuple[str, ...] = (
        "audio/wav",
        "audio/x-wav",
        "audio/wave",
        "audio/vnd.wave",
        "audio/flac",
        "audio/x-flac",
        "audio/mpeg",
        "audio/ogg",
        "audio/mp4",  # voice notes (m4a / AAC, opus): decoded by PyAV, the video extra
        "audio/x-m4a",
        "audio/aac",
        "audio/opus",
        "audio/webm",
        "application/octet-stream",
    )
    max_video_seconds: float = 120.0  # a longer clip is refused (413), read from its header before decoding
    video_types: tuple[str, ...] = (
        "video/mp4",
        "video/webm",
        "video/quicktime",
        "video/x-matroska",
        "video/x-m4v",
        "application/octet-stream",
    )


class ApiError(Exception):
    """An answer other than 200: status, machine-readable kind, a message a person can act on."""

    def __init__(self, status: int, kind: str, detail: str, field: str | None = None):
        super().__init__(detail)
        self.status, self.kind, self.detail, self.field = status, kind, detail, field


# ------------------------------------------------------------------------------------------------ schemas


class PostJSON(BaseModel):
    """One post as JSON: files as base64 (a ``data:...;base64,`` prefix is accepted)."""

    model_config = ConfigDict(extra="forbid")
    text: str | None = Field(None, description="The post's text.")
    image: str | None = Field(None, description="The image file, base64-encoded.")
    audio: str | None = Field(None, description="The audio file (a voice note), base64-encoded.")
    video: str | None = Field(None, description="A video clip (.mp4, .webm, .mov, .mkv), base64-encoded.")


class BatchJSON(BaseModel):
    model_config = ConfigDict(extra="forbid")
    posts: list[PostJSON]


class Score(BaseModel):
    label: str | None = Field(None, description="The label (absent for a regression checkpoint).")
    score: float


class Warning(BaseModel):
    kind: str = Field(description="e.g. silent_audio, clipped_audio")
    detail: str


class PredictResponse(BaseModel):
    label: str | None = Field(description="The most probable label (null for a regression checkpoint).")
    score: float = Field(description="Its probability (the predicted score, for a regression checkpoint).")
    scores: list[Score] = Field(description="Every label with its probability, sorted (Hugging Face shape).")
    contributions: dict[str, float] = Field(description="Share of the decision per modality given.")
    contribution_method: str = Field(description="learned_weights (the head's) or masking (top-score drop).")
    warnings: list[Warning] = Field(
        default_factory=list, description="What was wrong with an input but tolerated, as in training (e.g. silence)."
    )
    transcript: str | None = Field(None, description="What was said in the audio (models trained with --asr).")


class BatchResponse(BaseModel):
    predictions: list[PredictResponse]


class ErrorResponse(BaseModel):
    error: str
    detail: str
    field: str | None = None


def _inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON schema with its ``$defs`` written in place: a request body given in ``openapi_extra`` cannot
    point at ``#/$defs/...`` (OpenAPI keeps shared schemas under ``#/components``), so its refs never resolved."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(defs[ref.rsplit("/", 1)[-1]])
            return {k: resolve(v) for k, v in node.items()}
        return [resolve(v) for v in node] if isinstance(node, list) else node

    return resolve(schema)


_MULTIPART = {
    "type": "object",
    "properties": {
        "text": {"type": "string"},
        "image": {"type": "string", "format": "binary"},
        "audio": {"type": "string", "format": "binary"},
        "video": {"type": "string", "format": "binary"},
    },
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in (
        (400, "Malformed body"),
        (408, "The request body stalled (--body-timeout)"),
        (413, "Upload, text or image too large"),
        (415, "Content type not allowed"),
        (422, "Bad input: nothing given, unreadable file, modality the model lacks"),
        (503, "Busy or timed out; retry later"),
    )
}


# ------------------------------------------------------------------------------------------------ plumbing


class BodyLimit:
    """ASGI middleware refusing request bodies over ``limit`` bytes: at once from Content-Length, else while the
    body streams in (chunked uploads), so an oversize upload is never read whole. A body whose next piece takes
    over ``read_timeout`` seconds is cut off with a 408: a client that stalls mid-upload would otherwise hold a
    connection and a file descriptor for ever."""

    def __init__(self, app: Any, limit: int, read_timeout: float = 30.0):
        self.app, self.limit, self.read_timeout = app, limit, read_timeout

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            response = _error(self._error())
            return await response(scope, receive, send)
        seen, complete = 0, False

        async def limited() -> dict:
            nonlocal seen, complete
            if complete:  # after the body, receive() only waits for a disconnect: no limit on that
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.read_timeout)
            except TimeoutError:
                detail = f"no request body received for {self.read_timeout:g}s (--body-timeout)"
                raise ApiError(408, "body_timeout", detail) from None
            complete = message.get("type") != "http.request" or not message.get("more_body", False)
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise self._error()
            return message

        await self.app(scope, limited, send)

    def _error(self) -> ApiError:
        return ApiError(413, "payload_too_large", f"request body over the {self.limit:,}-byte limit (--max-upload-mb)")


def _error(exc: ApiError, headers: Mapping[str, str] | None = None) -> JSONResponse:
    headers = {**(headers or {}), **({"Retry-After": "1"} if exc.status == 503 else {})}
    if exc.status == 408:
        headers["Connection"] = "close"
    body = {"error": exc.kind, "detail": exc.detail, "field": exc.field}
    return JSONResponse(body, status_code=exc.status, headers=headers)


class Runner:
    """A bounded pool of model workers. A request waits (FIFO) for a free worker, then its call runs in a
    thread; the worker is released when the call really ends, even if the request timed out meanwhile.

    A request that had to queue starts its call only if the time left before its deadline covers a typical call
    (``expected_s``, a running mean of past calls); a started call gets that much grace past the deadline.
    Otherwise, under overload, a worker freed just before a deadline computed an answer that was then thrown away
    as a 503 (86 of 558 requests at 400 concurrent), while the queue behind it waited.
    """

    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self.pool = ThreadPoolExecutor(settings.workers, thread_name_prefix="fusent-model")
        self.slots = asyncio.Semaphore(settings.workers)
        self.waiting = 0
        self.expected_s = 0.0

    def _timed(self, fn: Callable[[], T]) -> Callable[[], T]:
        def call() -> T:
            start = time.perf_counter()
            try:
                return fn()
            finally:
                seconds = time.perf_counter() - start
                self.expected_s = seconds if not self.expected_s else 0.8 * self.expected_s + 0.2 * seconds

        return call

    async def run(self, fn: Callable[[], T]) -> T:
        s = self.settings
        if self.waiting >= s.max_queue:
            raise ApiError(503, "busy", f"{self.waiting} requests already waiting (--max-queue); retry later")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + s.timeout_s
        queued = self.slots.locked()  # no worker free on arrival: this request waits behind others
        self.waiting += 1
        try:
            await asyncio.wait_for(self.slots.acquire(), s.timeout_s)
        except TimeoutError:
            raise ApiError(503, "timeout", f"no worker free within {s.timeout_s:g}s (--timeout); retry later") from None
        finally:
            self.waiting -= 1
        left = deadline - loop.time()
        if queued and left < self.expected_s:  # (one that found a worker free always runs: it has its whole budget)
            self.slots.release()
            raise ApiError(
                503, "timeout", f"no worker free in time to answer within {s.timeout_s:g}s (--timeout); retry later"
            )
        future = loop.run_in_executor(self.pool, self._timed(fn))
        future.add_done_callback(lambda _: self.slots.release())
        try:
            return await asyncio.wait_for(asyncio.shield(future), max(left + self.expected_s, 0.001))
        except TimeoutError:
            raise ApiError(503, "timeout", f"prediction took over {s.timeout_s:g}s (--timeout)") from None

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def _decode_base64(value: str, name: str) -> bytes:
    match = re.match(r"data:([\w.+/-]*)(;[^,]*)?,", value)
    if match:
        value = value[match.end() :]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(422, "bad_base64", f"{name} is not valid base64", name) from None


def _check_text(text: Any, settings: ServeSettings, where: str = "") -> None:
    if isinstance(text, str | bytes) and len(text) > settings.max_text_chars:
        raise ApiError(
            413,
            "text_too_long",
            f"{where}text has {len(text):,} characters (limit {settings.max_text_chars:,}, --max-text-chars)",
            "text",
        )


def _post_from_json(post: PostJSON, settings: ServeSettings, where: str = "") -> dict[str, Any]:
    _check_text(post.text, settings, where)
    out: dict[str, Any] = {"text": post.text}
    for name in ("image", "audio", "video"):
        value = getattr(post, name)
        if value is not None:
            out[name] = _decode_base64(value, f"{where}{name}")
    return out


async def _post_from_form(request: Request, settings: ServeSettings) -> dict[str, Any]:
    try:
        form = await request.form(max_files=4, max_fields=4, max_part_size=settings.max_upload_bytes)
    except (ApiError, ClientDisconnect):
        raise
    except Exception as exc:  # malformed multipart (the parser's own errors)
        raise ApiError(400, "bad_multipart", f"cannot parse the multipart body: {exc}") from None
    try:
        unknown = sorted(set(form.keys()) - {"text", "image", "audio", "video"})
        if unknown:
            raise ApiError(422, "unknown_field", f"unknown form field(s) {unknown}; give text, image, audio, video")
        post: dict[str, Any] = {}
        text = form.get("text")
        post["text"] = (await text.read()) if isinstance(text, UploadFile) else text
        _check_text(post["text"], settings)
        kinds = (("image", settings.image_types), ("audio", settings.audio_types), ("video", settings.video_types))
        for name, allowed in kinds:
            item = form.get(name)
            if item is None or item == "":
                continue
            if not isinstance(item, UploadFile):
                raise ApiError(422, f"bad_{name}", f"{name} must be a file upload", name)
            kind = (item.content_type or "application/octet-stream").split(";")[0].strip().lower()
            if kind not in allowed:
                raise ApiError(
                    415,
                    "unsupported_media_type",
                    f"{name} has content type {kind!r}; allowed: {', '.join(allowed)}",
                    name,
                )
            data = await item.read()
            if data or item.filename:  # a file input left empty (no file name, no bytes) is "not given"
                post[name] = data  # an empty file is refused by the predictor, as it is in JSON
        return post
    finally:
        await form.close()


# ------------------------------------------------------------------------------------------------ the app


@dataclass
class Service:
    """What the handlers answer with, kept on ``app.state.service``: the handlers are module-level functions."""

    predictor: Predictor
    settings: ServeSettings
    runner: Runner
    card: dict[str, Any]


def _service(request: Request) -> Service:
    return request.app.state.service


def _docs_assets() -> Path | None:
    """The folder of Swagger UI and ReDoc files that ``fastapi-offline`` (the serve extra) installs: /docs then needs
    no CDN, so it works on a machine with no internet. None when the package is missing."""
    try:
        import fastapi_offline
    except ModuleNotFoundError:
        return None
    folder = Path(fastapi_offline.__file__).parent / "static"
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


DOCS_ASSETS = "/docs-assets"


async def _on_api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return _error(exc)


async def _on_validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return _error(ApiError(422, "invalid_request", str(exc.errors())))


async def _on_http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return _error(ApiError(exc.status_code, "http_error", str(exc.detail)), exc.headers)  # e.g. a 405's Allow


async def _on_disconnect(request: Request, _: Exception) -> Response:
    log.info("%s %s: the client left before its request was read", request.method, request.url.path)
    return Response(status_code=_CLIENT_GONE)


async def _answer(service: Service, posts: list[dict[str, Any]], batch: bool) -> list[Prediction]:
    predictor = service.predictor
    try:
        if batch:
            return await service.runner.run(lambda: predictor.predict_batch(posts))
        return [await service.runner.run(lambda: predictor.predict(**posts[0]))]
    except InputError as exc:
        raise ApiError(_STATUS.get(exc.kind, 422), exc.kind, str(exc), exc.field) from None


async def _read_json(request: Request, model: type[BaseModel]) -> Any:
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise ApiError(422, "invalid_json", problems) from None


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def predict(request: Request) -> dict[str, Any]:
    """One post: multipart (``text`` field, ``image``, ``audio`` and ``video`` files; a form with text only may
    be url-encoded) or JSON with base64 files."""
    service = _service(request)
    kind = _content_type(request)
    if kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
        post = await _post_from_form(request, service.settings)
    elif kind == "application/json":
        post = _post_from_json(await _read_json(request, PostJSON), service.settings)
    else:
        raise ApiError(415, "unsupported_media_type", "send multipart/form-data or application/json", None)
    return (await _answer(service, [post], batch=False))[0].to_dict()


async def predict_batch(request: Request) -> dict[str, Any]:
    """Several posts as JSON ``{"posts": [{"text": ..., "image": base64}, ...]}``; answered in order."""
    service = _service(request)
    settings = service.settings
    if _content_type(request) != "application/json":
        raise ApiError(415, "unsupported_media_type", 'send application/json: {"posts": [...]}')
    batch = await _read_json(request, BatchJSON)
    if not batch.posts:
        raise ApiError(422, "no_input", "posts is empty")
    if len(batch.posts) > settings.max_batch:
        raise ApiError(413, "batch_too_large", f"{len(batch.posts)} posts (limit {settings.max_batch})")
    posts = [_post_from_json(p, settings, f"post {i}: ") for i, p in enumerate(batch.posts)]
    return {"predictions": [p.to_dict() for p in await _answer(service, posts, batch=True)]}


async def health(request: Request) -> dict[str, Any]:
    return {"status": "ok", "waiting": _service(request).runner.waiting}


async def metadata(request: Request) -> dict[str, Any]:
    """What the model answers (labels), what it reads (modalities, encoders), how (fusion head), limits."""
    service = _service(request)
    predictor, config = service.predictor, service.predictor.model.config
    return {
        "labels": predictor.labels,
        "modalities": predictor.modalities,
        "encoders": {m: getattr(config, f"{m}_encoder", {}) for m in predictor.modalities},
        "fusion_head": config.head,
        "head_kwargs": config.head_kwargs,
        "contribution_method": "learned_weights" if predictor.learned_weights else "masking",
        "learned_weights": predictor.learned_weights,
        "runtime": predictor.runtime,
        "asr": predictor.asr,
        "version": __version__,
        "checkpoint_version": config.fusent_version,
        "limits": {k: v for k, v in asdict(service.settings).items() if k != "workers"},
    }


async def card(request: Request) -> dict[str, Any]:
    """The model card: dataset, task, labels, fusion head, encoders, split sizes and the held-out test metrics
    (from the run folder's metrics.json; null when the checkpoint was copied without it)."""
    return _service(request).card


async def page(_: Request) -> HTMLResponse:
    return HTMLResponse((resources.files("fusent") / "static" / "index.html").read_text(encoding="utf-8"))


def _docs_missing() -> ApiError:
    return ApiError(503, "docs_unavailable", "the API docs need fastapi-offline: pip install 'fusent[serve]'")


async def docs(request: Request) -> HTMLResponse:
    """Swagger UI from the installed files, no CDN (the favicon too: a browser would fetch it)."""
    if not request.app.state.docs_assets:
        raise _docs_missing()
    return get_swagger_ui_html(
        openapi_url="openapi.json",  # relative: the page also works behind a path prefix
        title="fusent - API docs",
        swagger_js_url=f"{DOCS_ASSETS.lstrip('/')}/swagger-ui-bundle.js",
        swagger_css_url=f"{DOCS_ASSETS.lstrip('/')}/swagger-ui.css",
        swagger_favicon_url=f"{DOCS_ASSETS.lstrip('/')}/favicon.png",
        oauth2_redirect_url=None,
    )


async def redoc(request: Request) -> HTMLResponse:
    if not request.app.state.docs_assets:
        raise _docs_missing()
    return get_redoc_html(
        openapi_url="openapi.json",
        title="fusent - API reference",
        redoc_js_url=f"{DOCS_ASSETS.lstrip('/')}/redoc.standalone.js",
        redoc_favicon_url=f"{DOCS_ASSETS.lstrip('/')}/favicon.png",
        with_google_fonts=False,
    )


def _request_body(content: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": content}}


def _add_routes(app: FastAPI) -> None:
    json_post = {"application/json": {"schema": _inline_schema(PostJSON)}}
    post_body = _request_body({"multipart/form-data": {"schema": _MULTIPART}, **json_post})
    batch_body = _request_body({"application/json": {"schema": _inline_schema(BatchJSON)}})
    app.add_api_route(
        "/predict",
        predict,
        methods=["POST"],
        response_model=PredictResponse,
        responses=_ERRORS,
        openapi_extra=post_body,
    )
    app.add_api_route(
        "/predict/batch",
        predict_batch,
        methods=["POST"],
        response_model=BatchResponse,
        responses=_ERRORS,
        openapi_extra=batch_body,
    )
    app.add_api_route("/health", health, methods=["GET"])
    app.add_api_route("/metadata", metadata, methods=["GET"])
    app.add_api_route("/model-card", card, methods=["GET"])
    app.add_api_route("/", page, methods=["GET"], response_class=HTMLResponse, include_in_schema=False)
    app.add_api_route("/docs", docs, methods=["GET"], response_class=HTMLResponse, include_in_schema=False)
    app.add_api_route("/redoc", redoc, methods=["GET"], response_class=HTMLResponse, include_in_schema=False)
    assets = app.state.docs_assets
    if assets:
        app.mount(DOCS_ASSETS, StaticFiles(directory=str(assets)), name="docs-assets")


def create_app(
    predictor: Predictor, settings: ServeSettings | None = None, checkpoint: str | Path | None = None
) -> FastAPI:
    """The FastAPI app answering with ``predictor`` (which must have no feature cache). ``checkpoint``: the folder
    it was loaded from, for the model card's dataset and test metrics (its run folder's metrics.json)."""
    if predictor.cache is not None:
        raise ValueError("serve a Predictor without a feature cache (use_cache=False): requests would fill the disk")
    settings = settings or ServeSettings()
    predictor.max_image_pixels = settings.max_image_pixels
    predictor.max_video_seconds = settings.max_video_seconds
    runner = Runner(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        runner.close()

    app = FastAPI(
        lifespan=lifespan,
        title="fusent",
        version=__version__,
        description="Multimodal sentiment prediction: POST a post's text, image (and audio) to /predict.",
        docs_url=None,  # served from installed files below, not from a CDN
        redoc_url=None,
    )
    card_data = model_card(predictor.model.config, predictor.modalities, checkpoint)
    app.state.service = Service(predictor, settings, runner, card_data)
    app.state.docs_assets = _docs_assets()
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes, read_timeout=settings.body_timeout_s)
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(ClientDisconnect, _on_disconnect)
    _add_routes(app)
    return app


def serve(
    checkpoint: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    settings: ServeSettings | None = None,
    predictor_options: dict[str, Any] | None = None,
    log_level: str = "info",
) -> None:
    """Load the checkpoint (no feature cache) and serve it with uvicorn until interrupted."""
    import uvicorn

    predictor = Predictor.from_pretrained(checkpoint, use_cache=False, **(predictor_options or {}))
    predictor.warm_up()
    uvicorn.run(create_app(predictor, settings, checkpoint), host=host, port=port, log_level=log_level)
