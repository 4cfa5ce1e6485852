"""Stored encodings: read (JSON or .safetensors), rebuild the text, delete."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from prototok import decode, load_model

from ..deps import SettingsDep, StoreDep
from ..metrics import DECODE_SECONDS
from ..schemas import EmbeddingView, ErrorBody, TextView

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
def get_embedding(emb_id: str, request: Request, store: StoreDep):
    stored = store.get(emb_id)
    if wants_bytes(request):
        return Response(stored.blob, media_type=OCTET, headers={
            "Content-Disposition": f'attachment; filename="{emb_id}.safetensors"', "X-Checksum-Sha256": stored.sha256})
    enc = stored.encoding()
    return EmbeddingView(
        id=emb_id, model=enc.model, method=enc.method.value, arrangement=enc.arrangement.value,
        sink=enc.sink,
        length=enc.n_tokens, lengths=enc.lengths, hidden_size=enc.hidden_size, accuracy=enc.accuracy,
        c_tokens=enc.c_tokens, h_lm=enc.h_lm, corrections=enc.n_corrections, steps=enc.steps, seconds=enc.seconds,
        created=stored.created, sha256=stored.sha256, vectors={k: v.tolist() for k, v in enc.vectors.items()},
    )


@router.get("/{emb_id}/text", response_model=TextView, responses=NOT_FOUND,
            summary="Rebuild the text in one forward pass")
def get_text(emb_id: str, store: StoreDep, settings: SettingsDep) -> TextView:
    """Decodes the stored vectors (plus stored corrections) and checks the result against the
    text's stored token checksum: the answer is the exact text or an error, never a near miss."""
    enc = store.get(emb_id).encoding(settings.max_decode_tokens)
    lm = load_model(enc.model)  # made by one of our workers, so a model this service runs
    [out] = decode(lm, [enc])
    DECODE_SECONDS.labels("stored").observe(out.seconds)
    return TextView(text=out.text, accuracy=out.accuracy, decode_ms=round(out.seconds * 1000, 3), model=lm.name,
                    length=len(out.ids))


@router.delete("/{emb_id}", status_code=204, responses={404: {"model": ErrorBody}}, summary="Delete an encoding")
def delete_embedding(emb_id: str, store: StoreDep) -> Response:
    store.delete(emb_id)
    return Response(status_code=204)
