"""Times the PyTorch reference DiT's forward on a CFG batch; launch/benchmark.py runs it.

    PYTHONPATH=tests/reference/shims $REFERENCE_PYTHON \
        tests/reference/time_reference_dit.py --frames=217,1013 --batch_size=1 --steps=3

(`launch/benchmark.py --forward_seconds=... --reference_python=...` calls it so, with the
DiT shape of its config; the defaults below are Stable Audio Open's.)

The model is `stable_audio_tools.models.dit.DiffusionTransformer` configured as SAO
(`continuous_transformer`, `project_cond_tokens=False`, the global embedding prepended as a
token, the timestep added to it), float32, eval mode, random initial weights (the timing
does not depend on their values; its zero-initialised output layers still run). Each
length is one forward under `torch.no_grad()` of the 2B batch that classifier-free
guidance builds:

    x                [2B, io_channels, frames]    the same noisy latents in both halves
    t                [2B]                         the same times in both halves
    cross_attn_cond  [2B, text_tokens, cond_token_dim]  random conditional half, zero
                                                  (null) unconditional half
    global_embed     [2B, global_cond_dim]        the timing embedding, kept in both halves

called with `cfg_scale=1.0`, so the reference runs its `_forward` once on the 2B batch
(the batch its CFG branch would build) and returns `[2B, io_channels, frames]`. The
conditioners (T5, the timing embedders) are not part of it.

Output: one JSON line on stdout, `{"torch_version", "stable_audio_tools_version",
"threads", "params", "build_seconds", "rows": [{"frames", "step_seconds",
"median_seconds"}, ...]}`; the step times are wall times of `--steps` calls after
`--warmup` untimed ones. `--build_only` builds the model and prints the line without rows
(a quick check that the SAO size builds).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import statistics
import time


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--io_channels", type=int, default=64)
    p.add_argument("--embed_dim", type=int, default=1536)
    p.add_argument("--depth", type=int, default=24)
    p.add_argument("--num_heads", type=int, default=24)
    p.add_argument("--cond_token_dim", type=int, default=768)
    p.add_argument("--global_cond_dim", type=int, default=1536)
    p.add_argument("--ff_mult", type=int, default=4, help="SwiGLU inner width / embed_dim")
    p.add_argument(
        "--text_tokens",
        type=int,
        default=130,
        help="cross-attention tokens: text tokens + 2 timing tokens (SAO: 128 + 2)",
    )
    p.add_argument(
        "--frames",
        type=lambda s: [int(f) for f in s.split(",") if f],
        default=[1024],
        help="comma-separated latent lengths, one timed row each",
    )
    p.add_argument("--batch_size", type=int, default=1, help="B: the forward batch is 2B (CFG)")
    p.add_argument("--steps", type=int, default=5, help="timed calls per length")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per length")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--build_only", action="store_true", help="build the model, time nothing")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    import torch
    from stable_audio_tools.models.dit import DiffusionTransformer

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    model = (
        DiffusionTransformer(
            io_channels=args.io_channels,
            embed_dim=args.embed_dim,
            depth=args.depth,
            num_heads=args.num_heads,
            cond_token_dim=args.cond_token_dim,
            global_cond_dim=args.global_cond_dim,
            project_cond_tokens=False,
            transformer_type="continuous_transformer",
            ff_kwargs={"mult": args.ff_mult},
        )
        .float()
        .eval()
    )
    build_seconds = time.perf_counter() - start

    rows = []
    b2 = 2 * args.batch_size
    with torch.no_grad():
        for frames in [] if args.build_only else args.frames:
            x = torch.randn(args.batch_size, args.io_channels, frames).repeat(2, 1, 1)  # [2B, io, frames]
            t = torch.rand(args.batch_size).repeat(2)  # [2B]
            cond = torch.randn(args.batch_size, args.text_tokens, args.cond_token_dim)
            cond = torch.cat([cond, torch.zeros_like(cond)])  # [2B, tokens, cond_dim]: null second half
            global_embed = torch.randn(args.batch_size, args.global_cond_dim).repeat(2, 1)  # [2B, global]
            step_seconds = []
            for i in range(args.warmup + args.steps):
                t0 = time.perf_counter()
                out = model(x, t, cross_attn_cond=cond, global_embed=global_embed, cfg_scale=1.0)
                elapsed = time.perf_counter() - t0  # CPU torch is synchronous: the call is the work
                if i >= args.warmup:
                    step_seconds.append(elapsed)
            if tuple(out.shape) != (b2, args.io_channels, frames):
                raise RuntimeError(f"unexpected output shape {tuple(out.shape)} for {frames} frames")
            rows.append(
                {"frames": frames, "step_seconds": step_seconds, "median_seconds": statistics.median(step_seconds)}
            )

    print(
        json.dumps(
            {
                "torch_version": torch.__version__,
                "stable_audio_tools_version": importlib.metadata.version("stable-audio-tools"),
                "threads": torch.get_num_threads(),
                "params": sum(p.numel() for p in model.parameters()),
                "build_seconds": build_seconds,
                "rows": rows,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
