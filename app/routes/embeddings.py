"""Stored encodings: read (JSON or .safetensors), rebuild the text, delete.

Each one is visible only to the key whose job made it and to admin keys (`EncodingStore.get`
and `delete` take the caller); to any other key it does not exist.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from prototok import Decoded, Encoding
from service.keys import Caller
from service.settings import ServiceSettings
from service.store import EncodingStore

from ..auth import CallerDep
from ..decoding import allowed_model
from ..deps import DecoderDep, SettingsDep, StoreDep
from ..schemas import EmbeddingView, ErrorBody, TextView
from ..telemetry import DECODE_SECONDS

router = APIRouter(prefix="/v1/embeddings", tags=["embeddings"])

OCTET = "application/octet-stream"
NOT_FOUND = {404: {"model": ErrorBody}, 409: {"model": ErrorBody}}


def wants_bytes(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return OCTET in accept and "application/json" not in accept


@router.get("/{emb_id}", response_model=EmbeddingView, summary="A stored encoding",
            responses={**NOT_FOUND, 200: {"content": {OCTET: {"schema": {"type": "string", "format": "binary"}}},
                                          "description": "JSON, or the .safetensors file with "
                                                         "`Accept: application/octet-stream`"}})
def get_embedding(emb_id: str, request: Request, store: StoreDep, caller: CallerDep):
    stored = store.get(emb_id, caller)
    if wants_bytes(request):
        return Response(stored.blob, media_type=OCTET, headers={
            "Content-Disposition": f'attachment; filename="{emb_id}.safetensors"', "X-Checksum-Sha256": stored.sha256})
    enc = stored.encoding()
    meta = enc.metadata()
    return EmbeddingView(
        id=emb_id, model=enc.model, method=enc.method.value, arrangement=enc.arrangement.value,
        sink=enc.sink,
        length=enc.n_tokens, lengths=enc.lengths, hidden_size=enc.hidden_size, accuracy=enc.accuracy,
        c_tokens=enc.c_tokens, h_lm=enc.h_lm, corrections=enc.n_corrections, steps=enc.steps, seconds=enc.seconds,
        created=stored.created, sha256=stored.sha256, vectors={k: v.tolist() for k, v in enc.vectors.items()},
        dtype=meta.get("dtype"), size=meta.get("size"), storage=enc.storage, rank=enc.rank, compute_dtype=enc.compute_dtype, min_margin=enc.min_margin,
        m_ref=enc.m_ref,
    )


def stored_encoding(emb_id: str, store: EncodingStore, caller: Caller, settings: ServiceSettings) -> Encoding:
    enc = store.get(emb_id, caller).encoding(settings.max_decode_tokens)
    allowed_model(enc.model, settings)  # a stored encoding can name any model: decode only with configured ones
    return enc


def text_view(out: Decoded, model: str) -> TextView:
    DECODE_SECONDS.labels("stored").observe(out.seconds)
    return TextView(text=out.text, accuracy=out.accuracy, decode_ms=round(out.seconds * 1000, 3), model=model,
                    length=len(out.ids), dtype=out.dtype)


@router.get("/{emb_id}/text", response_model=TextView, responses={**NOT_FOUND, 413: {"model": ErrorBody},
                                                                   503: {"model": ErrorBody}},
            summary="Rebuild the text in one forward pass")
async def get_text(emb_id: str, store: StoreDep, caller: CallerDep, settings: SettingsDep,
                   decoder: DecoderDep) -> TextView:
    """Decodes the stored vectors (plus stored corrections) and checks the result against the
    text's stored token checksum: the answer is the exact text or an error, never a near miss.
    The pass runs in the model's decode lane (app/batcher.py), joined with concurrent decodes."""
    enc = await run_in_threadpool(stored_encoding, emb_id, store, caller, settings)
    return text_view(await decoder.encoding(enc), enc.model)


@router.delete("/{emb_id}", status_code=204, responses={404: {"model": ErrorBody}}, summary="Delete an encoding")
def delete_embedding(emb_id: str, store: StoreDep, caller: CallerDep) -> Response:
    store.delete(emb_id, caller)
    return Response(status_code=204)
