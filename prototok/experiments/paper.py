"""The paper's own numbers (Mezentsev & Oseledets 2025), printed beside ours in summary.md."""

from __future__ import annotations

# Table 1: Llama-3.2-1B, 50 PG-19 texts, token accuracy by arrangement and length N.
TABLE1_MODEL = "Llama-3.2-1B"
TABLE1 = {
    "one": {1: "1.00", 2: "0.45±0.31", 4: "0.17±0.18", 256: "0.01±0.01"},
    "halves": {1: "1.00", 2: "1.00", 4: "0.12±0.13", 256: "0.01±0.01"},
    "pairs": {1: "1.00", 2: "1.00", 4: "1.00", 256: "0.17±0.34"},
    "e_mN": {1: "1.00", 2: "1.00", 4: "1.00", 256: "0.97±0.15"},
    "e_mN-1": {1: "1.00", 2: "1.00", 4: "1.00", 256: "0.99±0.10"},
}

# Table 2: Llama-3.2-1B, 256 PG-19 texts, N=256, 10 seeds; keys (shared, agg) -> {Sg: cell}.
TABLE2_MODEL = "Llama-3.2-1B"
TABLE2 = {
    ("e", "max"): {1: "1.00", 16: "0.99±0.01", 256: "0.99±0.02"},
    ("e", "avg"): {1: "0.98±0.08", 16: "0.90±0.17", 256: "0.86±0.20"},
    ("m", "max"): {1: "1.00", 16: "1.00", 256: "1.00±0.01"},
    ("m", "avg"): {1: "0.98±0.07", 16: "0.86±0.19", 256: "0.83±0.18"},
}

# Table 3: capacity (longest prefix at >= 0.99) and H_LM of it, by data, m shared, model.
TABLE3_MODELS = ["Pythia-160M", "Pythia-410M", "Pythia-1.4B", "Llama-3.2-1B", "Llama-3.2-3B", "Llama-3.1-8B"]
TABLE3_C = {
    ("random", False): [90, 92, 90, 256, 362, 512],
    ("random", True): [45, 22, 45, 181, 256, 256],
    ("fanfics", False): [128, 128, 131, 362, 512, 724],
    ("fanfics", True): [45, 45, 45, 181, 288, 362],
    ("prose", False): [128, 167, 128, 362, 512, 724],  # PG-19
    ("prose", True): [45, 32, 64, 181, 256, 362],
    ("generated", False): [128, 181, 128, 362, 512, 724],  # PG-19 generated
    ("generated", True): [45, 32, 64, 181, 362, 362],
}
TABLE3_H = {
    ("random", False): [507.5, 377.1, 470.7, 1551.3, 2193.4, 2974.4],
    ("random", True): [247.9, 91.1, 231.0, 947.7, 1292.2, 1309.4],
    ("fanfics", False): [358.9, 395.4, 261.0, 1107.6, 1408.4, 1763.3],
    ("fanfics", True): [145.0, 82.3, 147.9, 576.4, 835.9, 1112.8],
    ("prose", False): [388.4, 408.8, 298.4, 993.8, 1346.0, 1659.8],
    ("prose", True): [156.0, 88.1, 156.0, 456.5, 826.1, 832.3],
    ("generated", False): [354.1, 379.2, 277.6, 927.3, 1266.6, 1653.1],
    ("generated", True): [153.0, 106.9, 197.1, 478.7, 788.6, 771.7],
}
CAPACITY_GRID = [4, 5, 8, 11, 16, 22, 32, 45, 64, 90, 128, 181, 256, 362, 512, 724, 1024, 1448]

THROUGHPUT_RATIO = 279  # Figure 3: one-forward vs autoregressive decoding, mean over (model, dataset)
BEZIER_MAX_RATIO = 1.2  # Figure 6: longest Bezier path / straight segment


def paper_model(name: str) -> str | None:
    """The paper's name for our model, if the paper measured it ("meta-llama/Llama-3.2-1B" -> ...)."""
    key = name.lower().replace("_", "-")
    for model in TABLE3_MODELS:
        if model.lower() in key:
            return model
    return None


def reference_note(model_name: str, paper_model_name: str) -> str:
    if paper_model(model_name) == paper_model_name:
        return f"The paper's numbers below are for the same model ({paper_model_name})."
    return (f"The paper's numbers below are for {paper_model_name}, not `{model_name}`: "
            "for orientation only, not a like-for-like comparison.")
