"""Ten sentences of about 16 SmolLM2 tokens, written for this benchmark (public domain)."""

SENTENCES = [
    "The old lighthouse keeper climbed the narrow stairs each night to light the lamp.",
    "She folded the letter twice and hid it beneath the loose floorboard by the window.",
    "Rain fell steadily on the village green while the children waited under the oak.",
    "The captain studied the faded chart and frowned at the unfamiliar line of reefs.",
    "A grey cat slept on the warm stones of the garden wall all through the afternoon.",
    "He had promised his mother that he would return before the harvest moon rose.",
    "The carriage rattled over the bridge as the bells of the cathedral rang noon.",
    "In the library the clock ticked loudly, and nobody dared to turn another page.",
    "The miller counted his sacks of flour twice, for he trusted no one in the town.",
    "Snow had covered the road by morning, and the travellers set out on foot.",
]


def texts_of_about(lm, n: int, tokens: int) -> list[str]:
    """n texts of about `tokens` tokens: the sentences above, then whole-word prefixes of the
    shipped public-domain passages (prototok/data/prose.jsonl), so any n is available."""
    from prototok.experiments.datasets import passages

    out = list(SENTENCES[:n])
    for p in passages():
        if len(out) >= n:
            break
        words, text = p["text"].split(), ""
        for w in words:
            text = f"{text} {w}".strip()
            if len(lm.tokenize(text)) >= tokens:
                break
        out.append(text)
    return out
