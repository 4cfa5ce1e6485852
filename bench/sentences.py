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
