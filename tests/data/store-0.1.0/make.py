"""Writes the tiny byte-level corpus of the store fixture (public-domain King James Bible text).

Usage: python3 make.py BIBLE_TEXT OUT_DIR. BIBLE_TEXT is plain text of the King James Bible; the
committed shards were written from the held-out `bible` shard of `isoflop data prepare` (0.1.0),
decoded to text. Shard layout: crates/isoflop-data/src/shard.rs.
"""
import hashlib, json, os, struct, sys

text = open(sys.argv[1], "rb").read()
out = sys.argv[2]
os.makedirs(out, exist_ok=True)
EOT = 256  # the byte tokenizer's end-of-text id


def write(name, docs):
    tokens, starts, nbytes = [], [], []
    for d in docs:
        starts.append(len(tokens))
        tokens.extend(d)
        tokens.append(EOT)
        nbytes.append(len(d))
    payload = struct.pack(f"<{len(tokens)}H", *tokens)
    digest = hashlib.sha256(payload).digest()
    header = b"ISOFLOPS" + struct.pack("<IIII", 1, 2, 259, 0)
    header += struct.pack("<QQQ", len(tokens), len(docs), sum(nbytes)) + digest
    header += b"\0" * (128 - len(header))
    tail = b"".join(struct.pack("<Q", s) for s in starts) + b"".join(struct.pack("<Q", b) for b in nbytes)
    with open(os.path.join(out, name + ".bin"), "wb") as f:
        f.write(header + payload + tail)
    return {"name": name, "path": name + ".bin", "digest": digest.hex(), "tokens": len(tokens),
            "bytes": sum(nbytes), "documents": len(docs)}


def chunks(data, size):
    return [data[i:i + size] for i in range(0, len(data), size)]


train = write("train", chunks(text[:24000], 2000))
evals = [write("eval-early", chunks(text[24000:28000], 1000)), write("eval-late", chunks(text[-4000:], 1000))]
for e in evals:
    e["name"] = e["name"].removeprefix("eval-")
manifest = {"format": 1, "tokenizer": "byte", "vocab_size": 259, "train": train, "evals": evals,
            "sources": [{"name": "bible", "origin": "King James Bible (public domain)", "documents": 36,
                         "bytes": 32000, "train_documents": 12, "train_bytes": 24000,
                         "eval_documents": 8, "eval_bytes": 8000}],
            "fingerprint": ""}
json.dump(manifest, open(os.path.join(out, "manifest.json"), "w"), indent=2)
