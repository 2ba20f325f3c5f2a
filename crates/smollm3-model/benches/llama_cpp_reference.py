#!/usr/bin/env python3
"""llama.cpp on the same file with the same protocol as `cargo xtask bench`.

Measures, in a fresh process per repetition (like `xtask bench-child`): load time (file in the
page cache), time to first token (the first decode of a 1-token prompt, `--ttft-prompt`),
prefill tok/s (one `eval` of a 512-token prompt), greedy decode tok/s (128 single-token evals)
and peak RSS (VmHWM; llama.cpp mmaps the file, so the weights count as file-backed RSS). The
prompt is the same splitmix64 token sequence as the Rust bench (seed 0). `cargo xtask bench
--vs-llama-cpp` runs this script with `--reps 1` between its own runs.

Needs llama-cpp-python (the reference environment of fixtures/reference/ has 0.3.35, built
from source for this CPU):

    .venv-ref/bin/python crates/smollm3-model/benches/llama_cpp_reference.py \
        target/bench/smollm3-3b-synthetic-q4_k_m.gguf --threads 2
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

MASK = (1 << 64) - 1


def random_tokens(n, vocab, seed=0):
    """Same sequence as xtask/src/bench_child.rs `random_tokens`."""
    state = seed ^ 0x5DEECE66D1CE5EED
    out = []
    for _ in range(n):
        state = (state + 0x9E3779B97F4A7C15) & MASK
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        z ^= z >> 31
        out.append(z % vocab)
    return out


def status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def child(args):
    import numpy as np
    import llama_cpp
    from llama_cpp import Llama

    with open(args.model, "rb") as f:
        while f.read(8 << 20):
            pass

    t = time.perf_counter()
    llm = Llama(
        model_path=args.model,
        n_ctx=args.ctx,
        n_batch=args.prompt,
        n_ubatch=args.prompt,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        verbose=False,
    )
    load_s = time.perf_counter() - t
    vocab = llm.n_vocab()

    def last_argmax():
        ptr = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
        return int(np.ctypeslib.as_array(ptr, shape=(vocab,)).argmax())

    tokens = random_tokens(max(args.prompt, args.ttft_prompt), vocab)
    prompt = tokens[: args.prompt]
    t = time.perf_counter()
    llm.eval(tokens[: args.ttft_prompt])
    last_argmax()
    ttft_s = time.perf_counter() - t

    llm.reset()
    t = time.perf_counter()
    llm.eval(prompt)
    nxt = last_argmax()
    prefill_s = time.perf_counter() - t

    steps = []
    t = time.perf_counter()
    for _ in range(args.gen):
        s = time.perf_counter()
        llm.eval([nxt])
        nxt = last_argmax()
        steps.append((time.perf_counter() - s) * 1e3)
    decode_s = time.perf_counter() - t
    print(
        json.dumps(
            {
                "load_s": load_s,
                "ttft_s": ttft_s,
                "prefill_tok_s": args.prompt / prefill_s,
                "decode_tok_s": args.gen / decode_s,
                "decode_step_ms_median": statistics.median(steps),
                "vm_hwm_bytes": status_kb("VmHWM") * 1024,
                "llama_cpp_python": llama_cpp.__version__,
            }
        )
    )


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--prompt", type=int, default=512)
    p.add_argument("--gen", type=int, default=128)
    p.add_argument("--ctx", type=int, default=4096)
    p.add_argument("--ttft-prompt", type=int, default=1, help="prompt length of the TTFT measurement")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    runs = []
    for rep in range(args.reps):
        cmd = [sys.executable, __file__, "--child"] + sys.argv[1:]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        run = json.loads(out.strip().splitlines()[-1])
        print(f"run {rep + 1}/{args.reps}: {run}", file=sys.stderr)
        runs.append(run)
    med = {
        k: statistics.median(r[k] for r in runs)
        for k in runs[0]
        if isinstance(runs[0][k], (int, float))
    }
    med["load_to_first_token_s"] = statistics.median(r["load_s"] + r["ttft_s"] for r in runs)
    med["peak_rss_mb"] = med.pop("vm_hwm_bytes") / 1e6
    print(json.dumps({"threads": args.threads, "reps": args.reps, "median": med, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
