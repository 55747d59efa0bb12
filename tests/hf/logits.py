"""Loads a model directory written by `isoflop export --format hf` with transformers, offline,
and prints as JSON the logits of a token sequence and the ids its tokenizer gives a text.

usage: python logits.py MODEL_DIR TOKENS_JSON TEXT
"""
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

model_dir, tokens, text = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
model.eval()
tok = AutoTokenizer.from_pretrained(model_dir)
with torch.no_grad():
    logits = model(torch.tensor([tokens])).logits[0]
print(json.dumps({
    "architecture": type(model).__name__,
    "logits": logits.tolist(),
    "encoded": tok.encode(text, add_special_tokens=False),
    "decoded": tok.decode(tok.encode(text, add_special_tokens=False)),
}))
