"""`shardwise sample RUN_DIR`: text from a trained run's checkpoint."""

from __future__ import annotations

import os

import torch

from ..checkpoint.io import read_full_state
from ..data import load_corpus
from ..models import GPT, GPTConfig
from .parser import fail, non_negative_int, positive_int, real_number


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("sample", help="generate text with a trained run's model")
    p.add_argument("run_dir", help="a run folder written by `shardwise train` (or its checkpoint/)")
    p.add_argument("--prompt", default="def ", help="text to continue (at least one character)")
    p.add_argument("--tokens", type=positive_int, default=400, help="characters to generate")
    p.add_argument("--temperature", type=real_number(above=0, most=100), default=0.8,
                   help="softmax temperature: lower is more predictable")
    p.add_argument("--top-k", type=positive_int, default=None,
                   help="sample among the k likeliest characters only (default: all)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the sampling")
    p.set_defaults(run=main)


def main(args) -> int:
    if args.prompt == "":
        fail("--prompt is empty: give at least one character to continue")
    checkpoint = os.path.join(args.run_dir, "checkpoint")
    if not os.path.isdir(checkpoint):
        checkpoint = args.run_dir  # a checkpoint folder given directly
    state, meta = read_full_state(checkpoint)
    if "model_config" not in meta["extra"]:
        fail(f"{args.run_dir} holds no built-in GPT (its checkpoint has no model_config)")
    model = GPT(GPTConfig(**meta["extra"]["model_config"]))
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
        aliases = {n for n, p in model.named_parameters(remove_duplicate=False)} - {n for n, _ in model.named_parameters()}
        if set(missing) - aliases or unexpected:  # a tied parameter is saved once, under its first name
            raise RuntimeError(f"missing {sorted(set(missing) - aliases)}, unexpected {sorted(unexpected)}")
    except RuntimeError as exc:
        fail(f"checkpoint in {args.run_dir} does not fit the built-in GPT: {str(exc).splitlines()[0]}")
    model.eval()
    corpus = load_corpus()
    prompt = corpus.encode(args.prompt)[None, :]
    generator = torch.Generator().manual_seed(args.seed)
    out = model.generate(prompt, args.tokens, temperature=args.temperature, top_k=args.top_k, generator=generator)
    print(corpus.decode(out[0]))
    return 0
