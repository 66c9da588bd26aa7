"""Does saliency reveal a backdoor? The README's pointing-game table, measured in one run.

BadNets (3×3 patch, bottom-right, 10% of the training split relabelled to class 0) on a dataset's
seeded 80/20 split, the default CNN for 4 epochs, and a clean model with the same split, seed and
recipe (``clean_reference``). For each saliency method and layer, on ``--n-images`` triggered test
images whose true class is not the target: the share of maps whose maximum falls within the
pointing game's tolerance of the trigger box (:mod:`attacks.backdoor_saliency`), for the backdoored
and the clean model, and the share of those images each model assigns to the target.

    .venv/bin/python benchmarks/backdoor_saliency.py                      # digits, seed 0 (the README)
    .venv/bin/python benchmarks/backdoor_saliency.py --data mnist10k --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import time

import torch

from attacks.backdoor import run_backdoor_attack
from attacks.backdoor_saliency import DEFAULT_METHODS, backdoor_saliency
from workbench.data import load_dataset, train_test_split


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="digits")
    ap.add_argument("--rate", type=float, default=0.1)
    ap.add_argument("--patch-size", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--layers", nargs="+", default=["relu2", "relu4"])
    ap.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    ap.add_argument("--n-images", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds = load_dataset(args.data)
    t0 = time.perf_counter()
    print(f"### Pointing game with the {args.patch_size}×{args.patch_size} trigger box: {args.data}, BadNets "
          f"{args.rate:.0%}, {args.n_images} triggered test images, default CNN {args.epochs} epochs\n")
    print("| seed | layer | method | backdoored: hit rate | clean: hit rate | backdoored: predicted as target |"
          " clean: predicted as target |")
    print("|---|---|---|---|---|---|---|")
    for seed in args.seeds:
        tr, te = train_test_split(ds, 0.2, seed)
        r = run_backdoor_attack(ds, "badnets", args.rate, 0, seed=seed, epochs=args.epochs, train=tr, test=te,
                                patch_size=args.patch_size, clean_reference=True)
        for layer in args.layers:
            s = backdoor_saliency({"backdoored": r.model, "clean": r.clean_model}, te, r.trigger, 0,
                                  methods=args.methods, layer=layer, n_images=args.n_images, seed=seed)
            by = {(m, mod): (h, t) for m, mod, h, _, t in s.rows}
            for m in args.methods:
                (hb, tb), (hc, tc) = by[(m, "backdoored")], by[(m, "clean")]
                print(f"| {seed} | `{layer}` | {m} | {100 * hb:.1f}% | {100 * hc:.1f}% | {100 * tb:.1f}% | "
                      f"{100 * tc:.1f}% |")
        print(f"| {seed} | | (CA / ASR of the backdoored model: {100 * r.metrics.clean_accuracy:.2f}% / "
              f"{100 * r.metrics.attack_success_rate:.2f}%; clean model CA {100 * r.clean_model_accuracy:.2f}%) | | | | |")
    print(f"\nTotal {time.perf_counter() - t0:.0f} s, torch {torch.__version__}, {torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()
