"""Benchmark of issue 8: the small text-to-image model, text-trigger backdoors and SKD-CAG, measured in one run.

Steps (each cached in ``--work`` so an interrupted run resumes):
1. the clean model (trained with ``--train-steps`` unless ``--clean DIR`` is given) and the judge classifier;
   clean-prompt accuracy of its generations;
2. pixel and target backdoors planted by fine-tuning: success rate and clean-accuracy drop;
3. SKD-CAG (α = 0.5, zeros target; by default the text encoder trains with the clean-prompt anchor, UNet frozen:
   ``--params all --no-text-encoder --preserve 0`` is the paper's setting) per backdoor and seed: removal rate, clean fidelity drop,
   trigger attention mass, time; the fine-tuning-reversal baseline;
4. with ``--ablations``: α ∈ {0, 0.3, 0.5, 0.7, 1} and the three trigger targets on the pixel backdoor.

Prints markdown tables. Example (the numbers in the README come from this)::

    python benchmarks/diffusion_backdoor.py --work runs/bench-diffusion --seeds 0 1 2 --ablations
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from attacks.text_trigger import TextTriggerSpec, backdoor_rate, has_patch, plant_text_trigger
from defenses.skd_cag import (
    SKDCAGConfig,
    evaluate_unlearning,
    finetune_reversal,
    skd_cag,
    trigger_attention_mass,
)
from workbench.diffusion import (
    balanced_prompts,
    judge_classifier,
    load_text_to_image,
    prompt_accuracy,
    save_text_to_image,
    train_text_to_image,
)


def table(title, cols, rows):
    print(f"\n### {title}\n")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("runs/bench-diffusion"))
    ap.add_argument("--clean", type=Path, default=None, help="an existing clean checkpoint")
    ap.add_argument("--train-steps", type=int, default=1500)
    ap.add_argument("--backdoor-steps", type=int, default=1000)
    ap.add_argument("--poison-fraction", type=float, default=0.5)
    ap.add_argument("--unlearn-steps", type=int, default=150)
    ap.add_argument("--lr", type=float, default=2e-4, help="SKD-CAG learning rate")
    ap.add_argument("--per-class", type=int, default=10, help="generations per digit in each measurement")
    ap.add_argument("--seeds", type=int, nargs="*", default=[0])
    ap.add_argument("--kinds", nargs="+", default=["pixel", "target"])
    ap.add_argument("--ablations", action="store_true")
    ap.add_argument("--alphas", type=float, nargs="*", default=[0.0, 0.3, 0.5, 0.7, 1.0])
    ap.add_argument("--targets", nargs="*", default=["noise", "random_word"], help="extra targets at alpha 0.5")
    ap.add_argument("--baseline", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--inputs", default="trajectory", help="SKD-CAG inputs: noise or trajectory")
    ap.add_argument("--params", default="none", help="SKD-CAG trainable UNet parameters: all (the paper), kv, none")
    ap.add_argument("--text-encoder", default=True, action=argparse.BooleanOptionalAction,
                    help="SKD-CAG trains the student's text encoder (default; the paper: --no-text-encoder)")
    ap.add_argument("--preserve", type=float, default=1.0, help="SKD-CAG clean-prompt anchor weight (0 = the paper)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    recipe = {"inputs": args.inputs, "params": args.params, "text_encoder": args.text_encoder,
              "preserve": args.preserve}
    args.work.mkdir(parents=True, exist_ok=True)

    clean_dir = args.clean or args.work / "clean"
    if (clean_dir / "text2image.json").exists():
        clean = load_text_to_image(clean_dir)
    else:
        tr = train_text_to_image("digits", steps=args.train_steps)
        clean = tr.model
        save_text_to_image(clean, clean_dir)
    judge = judge_classifier("digits", clean.config.image_size)
    prompts = balanced_prompts(args.per_class, seed=0)
    acc = prompt_accuracy(clean, judge.model, prompts=prompts, steps=20)
    table("Clean model", ["data", "resolution", "UNet params", "train steps", "train s (wall)", "judge test acc",
                          "clean-prompt accuracy"],
          [["digits", "8×8", clean.num_parameters()["unet"], clean.provenance.get("steps"),
            clean.provenance.get("train_seconds"), float(judge.card.provenance["test_accuracy"]), acc.accuracy]])

    rows_bd, rows_un = [], []
    backdoored, befores = {}, {}
    for kind in args.kinds:
        spec = TextTriggerSpec(kind=kind, trigger="cf", target_class=0)
        bd_dir = args.work / f"backdoor-{kind}"
        bd_steps = args.backdoor_steps
        if (bd_dir / "text2image.json").exists():
            model = load_text_to_image(bd_dir)
            secs = float(model.provenance.get("backdoor_seconds", float("nan")))
            bd_steps = int(model.provenance.get("backdoor_steps", args.backdoor_steps))
        else:
            planted = plant_text_trigger(clean, "digits", spec, steps=args.backdoor_steps,
                                         poison_fraction=args.poison_fraction)
            model, secs = planted.model, planted.seconds
            save_text_to_image(model, bd_dir)
        backdoored[kind] = model
        rate = backdoor_rate(model, judge.model, spec, args.per_class).rate
        rate_clean = backdoor_rate(clean, judge.model, spec, args.per_class).rate
        pa = prompt_accuracy(model, judge.model, prompts=prompts, steps=20)
        acc_b = pa.accuracy
        if kind == "pixel":
            leak = float(has_patch(pa.images, spec.patch_size, spec.patch_threshold).float().mean())
        else:
            keep = pa.labels != spec.target_class
            leak = float((pa.predictions[keep] == spec.target_class).float().mean())
        rows_bd.append([kind, bd_steps, round(secs, 1), rate, rate_clean, leak, acc.accuracy, acc_b,
                        round(100 * (acc.accuracy - acc_b), 1)])
        print(rows_bd[-1], flush=True)
        before = {"rate": rate, "clean": acc_b, "mass": trigger_attention_mass(model, "cf")}
        befores[kind] = before
        for seed in args.seeds:
            cfg = SKDCAGConfig(steps=args.unlearn_steps, lr=args.lr, **recipe)
            run = skd_cag(model, "cf", config=cfg, seed=seed)
            ev = evaluate_unlearning(model, run, judge.model, spec, n_per_class=args.per_class, seed=0, before=before)
            rows_un.append(["SKD-CAG", kind, seed, cfg.alpha, cfg.target, round(run.seconds, 1), ev.backdoor_rate_before,
                            ev.backdoor_rate_after, ev.removal_rate, ev.clean_accuracy_before, ev.clean_accuracy_after,
                            round(100 * ev.clean_fidelity_drop, 1), ev.trigger_mass_before, ev.trigger_mass_after])
            print(rows_un[-1], flush=True)
        if args.baseline:
            run = finetune_reversal(model, clean, "cf", config=SKDCAGConfig(steps=args.unlearn_steps, lr=args.lr,
                                                                               **recipe))
            ev = evaluate_unlearning(model, run, judge.model, spec, n_per_class=args.per_class, seed=0, before=before)
            rows_un.append(["FT reversal", kind, 0, 0.0, "-", round(run.seconds, 1), ev.backdoor_rate_before,
                            ev.backdoor_rate_after, ev.removal_rate, ev.clean_accuracy_before, ev.clean_accuracy_after,
                            round(100 * ev.clean_fidelity_drop, 1), ev.trigger_mass_before, ev.trigger_mass_after])
            print(rows_un[-1], flush=True)
    table("Backdoors", ["kind", "steps", "seconds", "backdoor rate", "same on clean model",
                        "backdoor on clean prompts (leak)", "clean acc before",
                        "clean acc after", "drop (points)"], rows_bd)
    cols = ["method", "kind", "seed", "alpha", "target", "seconds", "backdoor before", "backdoor after", "removal",
            "clean acc before", "clean acc after", "fidelity drop (pts)", "trigger mass before", "after"]
    table("Unlearning", cols, rows_un)

    if args.ablations and "pixel" in backdoored:
        spec = TextTriggerSpec(kind="pixel", trigger="cf")
        model = backdoored["pixel"]
        rows = []
        grid = [(a, "zeros") for a in args.alphas] + [(0.5, t) for t in args.targets]
        for alpha, target in grid:
            t0 = time.perf_counter()
            run = skd_cag(model, "cf", config=SKDCAGConfig(alpha=alpha, target=target, steps=args.unlearn_steps,
                                                            lr=args.lr, **recipe), seed=0)
            ev = evaluate_unlearning(model, run, judge.model, spec, n_per_class=args.per_class, seed=0,
                                     before=befores["pixel"])
            rows.append([alpha, target, round(time.perf_counter() - t0, 1), ev.removal_rate,
                         round(100 * ev.clean_fidelity_drop, 1), ev.trigger_mass_after])
            print(rows[-1], flush=True)
        table("Ablations (pixel backdoor, seed 0)", ["alpha", "target", "seconds", "removal", "fidelity drop (pts)",
                                                     "trigger mass after"], rows)


if __name__ == "__main__":
    main()
