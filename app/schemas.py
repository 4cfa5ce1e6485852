"""Request and response bodies: one declaration gives validation, the OpenAPI docs and examples.

Limits that operators configure (text length, batch size, step cap) live in service/settings.py and are
checked in the routes, since a pydantic constraint is fixed when the class is defined.

Numbers and flags are strict: pydantic's lax mode would read `true` as 1.0 in a vector or as 1
step, `"5"` as 5 and `0.0` as false for `sink`; a client that sends those has a bug worth hearing
about. JSON has one number type, so integers count as floats, and a float with no fractional part
counts as the integer it equals (`5.0` steps is 5): the OpenAPI document says `type: integer`,
which in JSON Schema admits 5.0, and some clients write every number as a float. `5.5` is refused.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictInt,
    StringConstraints,
    model_validator,
)

from prototok.recipe import COMPACT, Arrangement, EncodeConfig, Method, encode_config
from prototok.storage import MAX_HIDDEN
from service.settings import ServiceSettings

EXAMPLE_TEXT = "The quick brown fox jumps over the lazy dog."
FiniteFloat = Annotated[float, Strict(), Field(allow_inf_nan=False)]


def _whole_number(value: object) -> object:
    """A float with no fractional part (5.0) as the int it equals; anything else as it came."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# The last item of every integer field's type: `Annotated[StrictInt, Field(limits), WHOLE]`. Limits
# before it, or the OpenAPI document shows them as pydantic's `ge`/`le` instead of `minimum`/`maximum`.
WHOLE = BeforeValidator(_whole_number)
Text = Annotated[str, StringConstraints(min_length=1)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EncodeOptions(Strict):
    """Optimisation knobs; anything left out takes the server's recipe (PROTOTOK_RECIPE)."""

    max_steps: Annotated[StrictInt, Field(ge=1), WHOLE] | None = Field(
        None, description="step budget; capped at PROTOTOK_MAX_STEPS_LIMIT", examples=[200])
    seeds: Annotated[StrictInt, Field(ge=1, le=64), WHOLE] | None = Field(
        None, description="random restarts run side by side; the best is kept")
    seed: Annotated[StrictInt, Field(ge=0, le=2**31 - 1), WHOLE] | None = Field(
        None, description="base seed; restart k uses seed + k")
    lr: FiniteFloat | None = Field(None, gt=0, le=10, description="AdamW learning rate")
    margin: FiniteFloat | None = Field(
        None, ge=0, lt=100, description="nats by which each right token must lead its best rival before a text "
        "counts as solved (tuned: 1.0, so the encoding decodes the same in other batches and dtypes; 0 stops at "
        "the first exact reconstruction)")
    recipe: Literal["tuned", "paper"] | None = Field(None, description="base recipe the other options change")
    arrangement: Arrangement | None = Field(None, description="input layout of e and m (paper, Table 1)")
    method: Method | None = Field(None, description="one_step (the paper) or autoregressive ([mem] baseline)")
    share: Literal["none", "shared_m", "shared_e"] | None = Field(
        None, description="for a batch: one m (or e) shared by the texts of a group (paper, Table 2)")
    group_size: Annotated[StrictInt, Field(ge=0, le=10**6), WHOLE] | None = Field(
        None, description="texts per sharing group; 0 = the whole batch")
    chunk_tokens: Annotated[StrictInt, Field(ge=1, le=4096), WHOLE] | None = Field(
        None, description="longer texts are split into chunks")
    sink: StrictBool | None = Field(None, description="a frozen BOS embedding before [e, m, ...] (tuned: on, paper: off)")
    start: Literal["random", "warm", "encoder"] | None = Field(None, description=(
        "where the optimisation begins: at random, at the model's warm start (tuned; random where the model has "
        "none), or at the start the model's encoder head predicts from the text (a job whose worker has no encoder "
        "for the model fails with invalid_input; not with model_m)"))
    storage: Literal["float32", "float16", "bfloat16", "int8"] | None = Field(
        None, description="how the file stores e and m: float32, float16, bfloat16, or int8 with a per-vector "
        "scale; below float32 a few straight-through steps follow the optimisation. With neither storage nor "
        "rank given, the server's default (PROTOTOK_STORAGE, PROTOTOK_RANK; int8 full vectors unless set). With "
        "model_m it applies to e alone")
    rank: Annotated[StrictInt, Field(ge=0, le=MAX_HIDDEN), WHOLE] | None = Field(None, description=(
        "optimise and store e and m as this many coefficients in a fixed basis (0 = full vectors); at most the "
        "model's hidden size (a job asking for more fails with invalid_input)"))
    compact: StrictBool | None = Field(None, description=(
        f"the smallest storage the size benchmark found to keep sentences lossless ({COMPACT}); "
        "not together with storage or rank"))
    model_m: StrictBool | None = Field(None, description=(
        "use the model's shared m (its warm start's m, stored once per model on the server): m is frozen, each text "
        "trains and stores only e (in `storage`), and the file names its m by digest (`m_ref`). Fewer bytes per text; "
        "not with rank, share, group_size or method=autoregressive (422). 409 model_m_missing when no worker "
        "serving the model has a start for it; a job that reaches a worker without one fails with that code"))

    @model_validator(mode="after")
    def _compact_alone(self) -> EncodeOptions:
        if self.compact and (self.storage is not None or self.rank is not None):
            raise ValueError("give compact or storage/rank, not both")
        return self

    def to_config(self, settings: ServiceSettings) -> EncodeConfig:
        """The exact config a worker will run, with the step budget capped (InvalidInput: 422 naming the field)."""
        return encode_config(self.recipe or settings.recipe, max_steps_limit=settings.max_steps_limit,
                             default_storage=settings.storage, default_rank=settings.rank,
                             **self.model_dump(exclude={"recipe"}))


def _no_default(schema: dict) -> None:
    """An optional field that may be left out but not sent as null: no `default: null` in the docs."""
    schema.pop("default", None)


class EncodeRequest(Strict):
    """One text, or a batch of texts optimised together in one job."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "oneOf": [{"required": ["text"]}, {"required": ["texts"]}],  # exactly one of them
        "examples": [
            {"text": EXAMPLE_TEXT, "options": {"max_steps": 200}},
            {"texts": ["first text", "second text"], "model": "smollm2-135m-instruct", "options": {"seeds": 2}},
        ]})

    text: Text = Field(None, description="the text to compress", json_schema_extra=_no_default)
    texts: list[Text] = Field(None, min_length=1, description="several texts, one job",
                              json_schema_extra=_no_default)
    model: Annotated[str, StringConstraints(min_length=1, max_length=512)] | None = Field(
        None, description="model to encode with; default PROTOTOK_MODEL")
    options: EncodeOptions = Field(default_factory=EncodeOptions)

    @model_validator(mode="after")
    def _one_of(self) -> EncodeRequest:
        if (self.text is None) == (self.texts is None):
            raise ValueError("give exactly one of 'text' or 'texts'")
        return self

    def all_texts(self) -> list[str]:
        return [self.text] if self.text is not None else list(self.texts or [])


class JobAccepted(BaseModel):
    job_id: str
    status: Literal["queued"] = "queued"
    model: str
    texts: int
    config: dict = Field(description="the encode config the worker will run (after defaults and caps)")


class ProgressPoint(BaseModel):
    step: int = Field(description="steps since the job started (counting on across batches of chunks)")
    loss: float
    accuracy: float


class JobProgress(BaseModel):
    """A job's progress as the worker last saved it (`prototok.Progress` is one optimisation step's report)."""

    step: int = Field(0, description="optimisation steps done (of the current batch of chunks)")
    max_steps: int = Field(description="the step budget: the recipe's max_steps, plus its ste_steps (the "
                                       "straight-through polish) when the vectors are stored below float32")
    accuracy: float = Field(0.0, description="mean best token accuracy so far, vectors alone")
    loss: float | None = None
    done: int = Field(0, description="chunks already reconstructed exactly")
    chunks: int | None = Field(None, description="chunks optimised in the current batch")
    history: list[ProgressPoint] = Field(default_factory=list, description=(
        "(step, loss, accuracy) every PROTOTOK_PROGRESS_EVERY steps; at most 500 points, thinned "
        "evenly over the whole run when longer"))
    tokens: list[str] | None = Field(None, description="the first text's first 256 tokens, each as text")
    correct: list[bool] | None = Field(None, description="per entry of `tokens`: whether the best vectors so "
                                                         "far rebuild it on their own")


class JobView(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"job_id": "5f0c...", "status": "running", "model": "smollm2-135m-instruct",
         "progress": {"step": 40, "max_steps": 200, "accuracy": 0.8, "loss": 0.9, "done": 0}},
        {"job_id": "5f0c...", "status": "finished", "model": "smollm2-135m-instruct",
         "progress": {"step": 57, "max_steps": 200, "accuracy": 1.0, "done": 1},
         "embedding_ids": ["9b2d4c0e6f7a4d8e9a1b2c3d4e5f6a7b"]},
        {"job_id": "5f0c...", "status": "failed", "model": "smollm2-135m-instruct",
         "progress": {"step": 12, "max_steps": 200, "accuracy": 0.4},
         "error": "the worker running this job stopped (killed or crashed) at step 12", "error_code": "worker_died"},
    ]})

    job_id: str
    status: Literal["queued", "running", "finished", "failed"]
    model: str | None = None
    progress: JobProgress
    embedding_ids: list[str] | None = None
    sizes: dict[str, dict[str, float]] | None = Field(None, description=(
        "finished: what each embedding weighs, by id (the `size` of GET /v1/embeddings/{id})"))
    error: str | None = Field(None, description="why it failed, for people")
    error_code: str | None = Field(None, description="why it failed, stable: invalid_input, worker_died, job_timeout, "
                                                   "canceled, ...")
    waiting_for_worker: bool = Field(False, description="queued while no live worker serves its model: "
                                     "it stays queued (nothing is lost) and runs when such a worker starts")
    cancel_requested: bool = Field(False, description="DELETE /v1/jobs/{id} asked it to stop; a running job "
                                   "stops at its next step and ends failed with error_code canceled")
    queue_position: int | None = Field(None, description="queued: jobs ahead of this one in its model's queue "
                                       "(0 = next)")
    eta_s: float | None = Field(None, description="queued: rough seconds until it ends, from the model's recent "
                                "encode times and live workers; null before any job has ended or with no worker")
    enqueued_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None


class EmbeddingView(BaseModel):
    id: str
    model: str
    method: str
    arrangement: str
    sink: bool = Field(description="a frozen BOS embedding stands before [e, m, ...] (pass it to POST /v1/decode)")
    length: int = Field(description="tokens in the text")
    lengths: list[int] = Field(description="tokens per chunk; one (e, m) pair per chunk")
    hidden_size: int
    accuracy: float = Field(description="token accuracy of the vectors alone, before corrections")
    c_tokens: int = Field(description="tokens the vectors reconstruct alone")
    h_lm: float = Field(description="information content of the text under the model, nats")
    corrections: int = Field(description="(position, token) fixes stored beside the vectors")
    steps: int
    seconds: float = Field(description="optimisation wall time")
    created: float
    sha256: str = Field(description="checksum of the stored .safetensors bytes")
    vectors: dict[str, list] = Field(description="e and m as (chunks, hidden_size) lists (e alone for model_m "
                                     "encodings: see m_ref); mem for autoregressive")
    dtype: str | None = Field(None, description="how the file stores the vectors (float32, ...), when it says")
    storage: str = Field("float32", description="float32 | float16 | bfloat16 | int8: the precision the file "
                         "stores e and m in (`vectors` holds what they decode as)")
    rank: int = Field(0, description="e and m are stored as this many coefficients in a fixed basis; 0: full")
    m_ref: dict[str, str | None] | None = Field(None, description=(
        "model_m encodings: the model's shared m they were made with (sha256 of its float32 bytes, start file "
        "name); the file and `vectors` hold e alone, and decoding finds m among the server's start files"))
    compute_dtype: str | None = Field(None, description="the model's dtype when it was encoded; decoding uses it")
    min_margin: float | None = Field(None, description="smallest lead (nats) of a right token in the verified decode")
    size: dict[str, float] | None = Field(None, description=(
        "what the encoding weighs (recorded at encode time; null for files from before): vectors_bytes (the "
        "stored vectors), file_bytes (the whole .safetensors file), text_bytes (the UTF-8 text), gzip_bytes and "
        "zstd_bytes (the text at gzip -9 / zstd -19), bits_per_char and bits_per_token (of the vectors)"))


class TextView(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"text": EXAMPLE_TEXT, "accuracy": 1.0, "decode_ms": 21.4, "model": "smollm2-135m-instruct", "length": 10,
         "dtype": "float32"}]})

    text: str
    accuracy: float = Field(description="token accuracy of the vectors alone; the text is exact either way")
    decode_ms: float = Field(description="time of the one forward pass")
    model: str
    length: int
    dtype: str = Field(description="the model dtype whose pass rebuilt the text: the one the encoding was made in "
                                   "unless its checksum failed there and another dtype of this host rebuilt it")


def _as_rows(value: object) -> object:
    """Accept one vector (d,) as well as rows (K, d): wrap a flat list of numbers."""
    if isinstance(value, list) and value and not isinstance(value[0], list):
        return [value]
    return value


Vectors = Annotated[list[Annotated[list[FiniteFloat], Field(min_length=1)]], Field(min_length=1),
                    BeforeValidator(_as_rows)]


class DecodeRequest(Strict):
    """Vectors from the client. No stored corrections here: the text is what the vectors alone give."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"model": "tiny-llama", "e": [0.1] * 32, "m": [0.2] * 32, "length": 5}]})

    model: Annotated[str, StringConstraints(min_length=1, max_length=512)] | None = None
    e: Vectors = Field(description="(chunks, hidden_size); a single (hidden_size,) list is one chunk")
    m: Vectors = Field(description="same shape as e")
    length: Annotated[StrictInt, Field(ge=1), WHOLE] | list[Annotated[StrictInt, Field(ge=1), WHOLE]] = Field(
        description="tokens to rebuild; one per chunk")
    arrangement: Arrangement = Arrangement.E_MN1
    sink: StrictBool = Field(True, description="the model's BOS embedding stands before [e, m, ...], as in encodings "
                                         "made with the default (tuned) recipe; false for the paper's recipe. "
                                         "GET /v1/embeddings/{id} says which.")

    def lengths(self) -> list[int]:
        return [self.length] if isinstance(self.length, int) else list(self.length)


class DecodedText(BaseModel):
    """The answer of POST /v1/decode (`prototok.Decoded` is the core's result, with token ids and timing)."""

    text: str
    model: str
    length: int
    decode_ms: float
    accuracy: float | None = Field(None, description="only for an uploaded encoding, which carries its target")
    dtype: str | None = Field(None, description="only for an uploaded encoding: the model dtype whose pass rebuilt "
                                                "it (another of this host's dtypes when its checksum failed in the "
                                                "first)")


class ErrorBody(BaseModel):
    code: str = Field(examples=["text_too_long"])
    message: str = Field(examples=["text has 25000 characters; the limit is 20000"])
