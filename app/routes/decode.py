"""POST /v1/decode: text from vectors the client holds, as JSON or as a .safetensors upload.

JSON vectors carry no corrections, so the answer is what the vectors alone rebuild. An
uploaded prototok `.safetensors` (as `GET /v1/embeddings/{id}` with
`Accept: application/octet-stream` or the CLI writes it) carries its corrections and the
text's token checksum, so it decodes exactly or fails with `decode_mismatch`.
"""

from __future__ import annotations

import torch
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import UploadFile

import prototok
from prototok import Encoding
from prototok.encoding import check_positions
from prototok.errors import BadVectors, InvalidInput
from service.errors import ServiceError
from service.settings import ServiceSettings

from ..decoding import allowed_model
from ..deps import DecoderDep, SettingsDep
from ..schemas import DecodedText, DecodeRequest, ErrorBody
from ..telemetry import DECODE_SECONDS

router = APIRouter(prefix="/v1", tags=["decode"])

MAX_UPLOAD_BYTES = 64 * 2**20
_JSON_SCHEMA = DecodeRequest.model_json_schema(ref_template="#/components/schemas/{model}")
_JSON_SCHEMA.pop("$defs", None)  # Arrangement is in the components already (EncodeOptions uses it)
BODY_DOC = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": _JSON_SCHEMA},
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary", "description": "a prototok .safetensors encoding"}}}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
}}}


class UploadTooLarge(ServiceError):
    code, status = "payload_too_large", 413


def vectors_of(req: DecodeRequest, settings: ServiceSettings) -> tuple[str, torch.Tensor, torch.Tensor]:
    """(model, e, m) of a JSON request, its size checked before the tensors are built."""
    check_positions(req.lengths(), settings.max_decode_tokens, "this request")
    model = allowed_model(req.model, settings)
    try:
        return model, torch.tensor(req.e, dtype=torch.float32), torch.tensor(req.m, dtype=torch.float32)
    except (ValueError, TypeError) as exc:  # ragged nested lists
        raise BadVectors(f"e and m must be rectangular arrays of numbers: {exc}") from exc


def upload_of(blob: bytes, settings: ServiceSettings) -> tuple[str, Encoding]:
    """(model, encoding) of an upload, its size judged from the header before anything is built."""
    enc = Encoding.from_bytes(blob, max_tokens=settings.max_decode_tokens)
    return allowed_model(enc.model, settings), enc


def vectors_answer(model: str, req: DecodeRequest, text: str, seconds: float) -> DecodedText:
    DECODE_SECONDS.labels("vectors").observe(seconds)
    return DecodedText(text=text, model=model, length=sum(req.lengths()), decode_ms=round(seconds * 1000, 3))


def upload_answer(model: str, out: prototok.Decoded) -> DecodedText:
    DECODE_SECONDS.labels("upload").observe(out.seconds)
    return DecodedText(text=out.text, model=model, length=len(out.ids), decode_ms=round(out.seconds * 1000, 3),
                       accuracy=out.accuracy, dtype=out.dtype)


async def uploaded_bytes(request: Request) -> bytes:
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form(max_part_size=MAX_UPLOAD_BYTES)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidInput("multipart upload needs the .safetensors file in a field named 'file'")
        blob = await upload.read()
    else:
        blob = await request.body()
    if len(blob) > MAX_UPLOAD_BYTES:
        raise UploadTooLarge(f"upload of {len(blob)} bytes; the limit is {MAX_UPLOAD_BYTES}")
    return blob


def parse_json(raw: bytes) -> DecodeRequest:
    try:
        return DecodeRequest.model_validate_json(raw)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False, include_input=False)]
        raise RequestValidationError(errors) from None


@router.post("/decode", response_model=DecodedText, openapi_extra=BODY_DOC,
             responses={s: {"model": ErrorBody} for s in (400, 404, 409, 413, 422, 503)},
             summary="Decode client-supplied vectors or an uploaded .safetensors encoding")
async def decode_route(request: Request, settings: SettingsDep, decoder: DecoderDep) -> DecodedText:
    """Parsing and checks run in the thread pool, the pass in the model's decode lane (app/batcher.py)."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith(("multipart/form-data", "application/octet-stream")):
        blob = await uploaded_bytes(request)
        model, enc = await run_in_threadpool(upload_of, blob, settings)
        return upload_answer(model, await decoder.encoding(enc))
    raw = await request.body()
    req = await run_in_threadpool(parse_json, raw)
    model, e, m = await run_in_threadpool(vectors_of, req, settings)
    res = await decoder.vectors(model, e, m, req.lengths(), req.arrangement, req.sink)
    return vectors_answer(model, req, res.text, res.seconds)
