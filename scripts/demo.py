"""Walk one real text through a running prototok service and print every step.

    python scripts/demo.py [--url http://127.0.0.1:8000] [--key KEY] [--text "..."] [--max-steps N] [--seeds K]

The API key comes from --key or PROTOTOK_API_KEY (make one with `prototok keys create NAME`);
leave both out for a service running with PROTOTOK_AUTH=off.

POST /v1/encode -> poll GET /v1/jobs/{id} (progress) -> GET /v1/embeddings/{id} ->
GET /v1/embeddings/{id}/text, then check the rebuilt text is exactly the original.
Exits 1 if any step fails or the text differs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import httpx

DEFAULT_TEXT = "Proto-tokens rebuild this text in one pass."


def show(title: str, r: httpx.Response) -> dict:
    print(f"\n== {title}: {r.request.method} {r.request.url.path} -> {r.status_code}")
    body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
    if r.status_code >= 400:
        print(json.dumps(body, indent=2))
        sys.exit(1)
    return body


def poll(http: httpx.Client, job_id: str, timeout_s: float) -> dict:
    start = time.monotonic()
    deadline, last = start + timeout_s, None
    while time.monotonic() < deadline:
        r = http.get(f"/v1/jobs/{job_id}")
        job = r.json() if r.status_code == 200 else show("poll", r)
        p = job["progress"]
        line = f"   {job['status']:8s} step {p['step']:>5}/{p['max_steps']}  accuracy {p['accuracy']:.3f}"
        if job["status"] == "running" and p["step"] > 0:
            spent = time.monotonic() - start
            line += f"  ({spent:.0f} s so far; at most ~{spent / p['step'] * (p['max_steps'] - p['step']):.0f} s more)"
        if line.split("(")[0] != (last or "").split("(")[0]:
            print(line, flush=True)
            last = line
        if job["status"] in ("finished", "failed"):
            return job
        time.sleep(0.5)
    print(f"job {job_id} did not end within {timeout_s:.0f} s")
    sys.exit(1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--key", default=os.environ.get("PROTOTOK_API_KEY"), help="API key (default: $PROTOTOK_API_KEY)")
    ap.add_argument("--text", default=DEFAULT_TEXT)
    ap.add_argument("--max-steps", type=int, default=None, help="step budget (default: the service's recipe)")
    ap.add_argument("--seeds", type=int, default=None, help="restarts side by side (default: the recipe's)")
    ap.add_argument("--timeout", type=float, default=1800)
    args = ap.parse_args()
    headers = {"Authorization": f"Bearer {args.key}"} if args.key else {}
    http = httpx.Client(base_url=args.url, timeout=300, headers=headers)

    ready = http.get("/readyz").json()
    print(f"service at {args.url}: workers serve {ready.get('models')}; "
          f"{'with an API key' if args.key else 'no API key (PROTOTOK_AUTH=off)'}")
    print(f"text ({len(args.text)} chars): {args.text!r}")
    print("The worker now optimises two vectors until the model rebuilds every token from them, each with a "
          "margin over its rival (the service's default recipe). On a 2-core CPU that is usually 10-60 s for "
          "this sentence, more while the machine is busy; decoding takes well under a second.")
    options = {k: v for k, v in (("max_steps", args.max_steps), ("seeds", args.seeds)) if v is not None}
    body = {"text": args.text, "options": options}
    accepted = show("1. encode", http.post("/v1/encode", json=body))
    print(f"   job {accepted['job_id']} for model {accepted['model']} (Location: /v1/jobs/{accepted['job_id']})")

    print(f"\n== 2. poll GET /v1/jobs/{accepted['job_id']}")
    job = poll(http, accepted["job_id"], args.timeout)
    if job["status"] != "finished":
        print(f"   failed: [{job['error_code']}] {job['error']}")
        return 1
    emb_id = job["embedding_ids"][0]

    emb = show("3. stored encoding", http.get(f"/v1/embeddings/{emb_id}"))
    print(f"   id {emb_id}: {emb['length']} tokens, model {emb['model']}, arrangement {emb['arrangement']}, "
          f"e,m {len(emb['vectors']['e'])}x{emb['hidden_size']}")
    print(f"   vectors alone rebuild {emb['c_tokens']}/{emb['length']} tokens (accuracy {emb['accuracy']:.3f}); "
          f"{emb['corrections']} stored corrections; H_LM {emb['h_lm']:.1f} nats; "
          f"{emb['steps']} steps in {emb['seconds']:.1f} s")

    out = show("4. decode", http.get(f"/v1/embeddings/{emb_id}/text"))
    print(f"   text: {out['text']!r}\n   one forward pass: {out['decode_ms']:.1f} ms")
    ok = out["text"] == args.text
    print(f"\n== 5. check: {'EXACT MATCH' if ok else 'MISMATCH'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
