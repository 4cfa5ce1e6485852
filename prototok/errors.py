"""Errors a caller can act on. The CLI turns them into one-line messages and exit codes,
the API into answers with a stable `code`.

Each class carries its `status`, the HTTP status a service answers it with, so the mapping
lives with the error and a subclass inherits it (no list order to keep right elsewhere).
"""


class PrototokError(Exception):
    """Base class: a problem with the caller's input, not a bug."""

    code = "invalid_input"
    status = 422


class InvalidInput(PrototokError):
    code = "invalid_input"


class EmptyText(InvalidInput):
    code = "empty_text"


class TextTooLong(InvalidInput):
    code = "text_too_long"
    status = 413


class UnknownModel(PrototokError):
    code = "unknown_model"
    status = 404


class ModelUnavailable(PrototokError):
    """A known model whose files or package are missing on this host: the host's fault, not the caller's."""

    code = "model_unavailable"
    status = 503


class ModelMismatch(PrototokError):
    """The encoding was made with another model or tokenizer than the one asked to decode it."""

    code = "model_mismatch"
    status = 409


class BadVectors(InvalidInput):
    """Vectors of the wrong shape, or with NaN/inf."""

    code = "bad_vectors"


class ModelMMissing(PrototokError):
    """The model's shared m (its start, prototok/starts.py) is not on this host: an encode with
    model_m has no m to freeze, or a file made with model_m names an m that no start here holds.
    Never answered by decoding with another m: the text would be wrong."""

    code = "model_m_missing"
    status = 409


class CorruptEncoding(PrototokError):
    """A file or blob that is not a readable prototok encoding."""

    code = "corrupt_encoding"


class DecodeMismatch(PrototokError):
    """Decoding ran but did not reproduce the encoded token ids (checksum differs)."""

    code = "decode_mismatch"
    status = 409


class TooManyTokens(InvalidInput):
    """A decode that asks for more positions than the configured limit (checked before any allocation)."""

    code = "too_many_tokens"
    status = 413
