"""Errors a caller can act on. The CLI turns them into one-line messages and exit codes,
the API into 4xx answers with a stable `code`."""


class PrototokError(Exception):
    """Base class: a problem with the caller's input, not a bug."""

    code = "invalid_input"


class InvalidInput(PrototokError):
    code = "invalid_input"


class EmptyText(InvalidInput):
    code = "empty_text"


class TextTooLong(InvalidInput):
    code = "text_too_long"


class UnknownModel(PrototokError):
    code = "unknown_model"


class ModelMismatch(PrototokError):
    """The encoding was made with another model or tokenizer than the one asked to decode it."""

    code = "model_mismatch"


class BadVectors(InvalidInput):
    """Vectors of the wrong shape, or with NaN/inf."""

    code = "bad_vectors"


class CorruptEncoding(PrototokError):
    """A file or blob that is not a readable prototok encoding."""

    code = "corrupt_encoding"


class DecodeMismatch(PrototokError):
    """Decoding ran but did not reproduce the encoded token ids (checksum differs)."""

    code = "decode_mismatch"


class TooManyTokens(InvalidInput):
    """A decode that asks for more positions than the configured limit (checked before any allocation)."""

    code = "too_many_tokens"
