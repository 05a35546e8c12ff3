"""`shardwise sample RUN_DIR`: text from a trained run's checkpoint."""

from __future__ import annotations

import json
import os

import torch

from ..data import load_corpus
from ..models import GPT, GPTConfig
from .parser import fail, positive_int


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("sample", help="generate text with a trained run's model")
    p.add_argument("run_dir", help="a run folder written by `shardwise train`")
    p.add_argument("--prompt", default="def ", help="text to continue")
    p.add_argument("--tokens", type=positive_int, default=400, help="characters to generate")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=main)


def main(args) -> int:
    checkpoint = os.path.join(args.run_dir, "checkpoint")
    meta_path = os.path.join(checkpoint, "meta.json")
    if not os.path.exists(meta_path):
        fail(f"no checkpoint in {args.run_dir} (expected {meta_path})")
    if not args.temperature > 0:
        fail(f"--temperature must be positive, got {args.temperature}")
    with open(meta_path) as f:
        meta = json.load(f)
    model = GPT(GPTConfig(**meta["extra"]["model_config"]))
    try:
        model.load_state_dict(torch.load(os.path.join(checkpoint, "model.pt"), weights_only=True, map_location="cpu"))
    except Exception as exc:
        fail(f"checkpoint in {args.run_dir} is unreadable: {str(exc).splitlines()[0]}")
    model.eval()
    corpus = load_corpus()
    prompt = corpus.encode(args.prompt)[None, :]
    generator = torch.Generator().manual_seed(args.seed)
    out = model.generate(prompt, args.tokens, temperature=args.temperature, top_k=args.top_k, generator=generator)
    print(corpus.decode(out[0]))
    return 0
