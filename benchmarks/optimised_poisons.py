"""Optimised (gradient-matching) poisons against the unpoisoned control, in one run, printed as Markdown (issue 16).

Sections (``--sections``):
  smoothing  availability attack on randomized smoothing: the clean model (control), the best hand design
             (``noise-directions``) and the gradient-matching design, per seed; fallback rates, accuracy,
             crafting and training time; plus the surrogate-vs-victim diagnostic (the top-class vote share
             on triggered test inputs of the surrogate, of the surrogate after one more epoch on the poisoned
             set, and of the victim trained from scratch).
  ibp        the same against interval bounds (hand design: pairs at ±2ε; the optimised variant adds a
             clean-robustness term to pull the clean fallback back).
  blto-eps   BLTO with the long inner loop at several ε (seed 0): the unpoisoned control's ASR with the
             learned trigger, to find an ε where the control is ≤ 10%.
  blto       at one ε, per seed: an unpoisoned SimCLR victim (clean CA and the control ASR), the BLTO
             victim and the gradient-matching victim (BLTO's trigger at test time), with costs.

    .venv/bin/python benchmarks/optimised_poisons.py --sections smoothing --seeds 0 1 2 --threads 1
    .venv/bin/python benchmarks/optimised_poisons.py --sections ibp --seeds 0 1 2 --threads 1
    .venv/bin/python benchmarks/optimised_poisons.py --sections blto-eps --eps-list 0.05 0.1 0.15 --threads 1
    .venv/bin/python benchmarks/optimised_poisons.py --sections blto --epsilon 0.1 --seeds 0 1 2 --threads 1
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch

from attacks.availability import (
    MatchingOptions,
    default_trigger,
    poison_for_ibp,
    poison_for_smoothing,
    run_availability,
    train_victim,
)
from workbench.data import load_dataset, stratified_subset, train_test_split


def pct(v: float) -> str:
    return f"{100 * v:.1f}"


def table(title: str, cols: list[str], rows: list[list]) -> None:
    print(f"\n### {title}\n")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")
    print(flush=True)


# ---------------------------------------------------------------- certifier availability
def vote_share(model, x: torch.Tensor, sigma: float, n: int = 200, seed: int = 0) -> tuple[float, float]:
    """(mean top-class share of ``n`` noisy votes, share of inputs whose top class has < 1/2 of them)."""
    from workbench.certify.smoothing import sample_counts

    c = sample_counts(model, x, n, sigma, generator=torch.Generator().manual_seed(seed)).float()
    top = c.max(1).values / n
    return float(top.mean()), float((top < 0.5).float().mean())


def ibp_fallback(model, x: torch.Tensor, eps: float) -> float:
    from workbench.certify import certify_ibp

    return certify_ibp(model, x, eps).abstain_rate


def first_order_descent(model, data, idx, train_loss, adv_loss, lr: float = 1e-3, draws: int = 4) -> float:
    """Change of the adversarial objective after one SGD step (``lr``) on the gradient of all poisons
    (averaged over ``draws`` noise draws): negative when training on the poison descends the objective."""
    m = copy.deepcopy(model).eval()
    gen = torch.Generator().manual_seed(3)
    params = list(m.parameters())
    loss = sum(train_loss(m, data.images[idx], data.labels[idx], gen) for _ in range(draws)) / draws
    grads = torch.autograd.grad(loss, params)
    with torch.no_grad():
        before = float(adv_loss(m, torch.Generator().manual_seed(9)))
        for p, g in zip(params, grads):
            p -= lr * g
        return float(adv_loss(m, torch.Generator().manual_seed(9))) - before


def surrogate_gap(res, base, args, test_x: torch.Tensor) -> list:
    """What the poison does to the surrogate it was crafted on, versus the victim trained from scratch:
    the first-order change of the adversarial objective (on triggered test inputs) from one SGD step on
    the base poison and on the optimised one, and the measured effect on the surrogate, on the surrogate
    after one more epoch on the poisoned set (the victim's recipe, small constant learning rate) and on
    the victim."""
    from attacks.availability import _victim_train_loss, ibp_availability_loss, smoothing_vote_loss
    from workbench.certify.intervals import train_ibp
    from workbench.training import fit, gaussian_noise

    sur = res.poison_set.surrogates[0]
    data, idx, trig = res.poison_set.dataset, res.poison_set.poisoned_indices, res.poison_set.trigger
    tl = _victim_train_loss(res.certifier, args.sigma, args.eps)
    if res.certifier == "smoothing":
        adv = smoothing_vote_loss(trig(test_x), args.sigma, draws=32)
    else:
        adv = ibp_availability_loss(trig(test_x), test_x, torch.zeros(0, dtype=torch.long), args.eps, clean_weight=0)
    d_base = first_order_descent(sur, base.dataset, idx, tl, adv)
    d_gm = first_order_descent(sur, data, idx, tl, adv)
    tuned = copy.deepcopy(sur)
    if res.certifier == "smoothing":
        fit(tuned, data, epochs=1, lr=3e-4, schedule="constant", seed=args.seed_offset,
            transform=gaussian_noise(args.sigma))

        def measure(m):
            share, below = vote_share(m, trig(test_x), args.sigma)
            return f"{share:.3f} / {pct(below)}%"
    else:
        train_ibp(tuned, data, 1.1 * args.eps, epochs=1, warmup=0.0, ramp=1e-6, lr=3e-4, seed=args.seed_offset)

        def measure(m):
            return f"{pct(ibp_fallback(m, trig(test_x), args.eps))}% / {pct(ibp_fallback(m, test_x, args.eps))}%"
    return [f"{d_base:+.4f}", f"{d_gm:+.4f}", measure(sur), measure(tuned), measure(res.victim.model)]


def availability(args, ds, certifier: str) -> None:
    trig = default_trigger(args.patch)
    opts = MatchingOptions(base=args.base, poison_eps=args.poison_eps, region=args.region,
                           surrogates=args.surrogates, steps=args.steps, restarts=args.restarts,
                           retrain_every=args.retrain_every, temperature=args.temperature, objective=args.objective,
                           clean_weight=args.clean_weight, draws=args.draws)
    kw = dict(trigger=trig, sigma=args.sigma, eps=args.eps, n=args.n, n_test=args.n_test, width=args.width or None,
              epochs=args.epochs or None)
    rows, gap, raw = [], [], []
    for seed in args.seeds:
        train, test = train_test_split(ds, 0.2, seed)
        clean = train_victim(train, test, certifier, sigma=args.sigma, eps=args.eps, seed=seed,
                             epochs=args.epochs or None, width=args.width or None)
        for design in args.designs:
            t0 = time.perf_counter()
            res = run_availability(ds, certifier, args.rate, seed=seed, design=design, matching=opts,
                                   clean_victim=clean, **kw)
            total = time.perf_counter() - t0
            craft = res.poison.get("crafting", {})
            if design == args.designs[0]:
                rows.append([seed, "none (clean model, control)", pct(res.fallback("clean", "triggered")),
                             pct(res.fallback("clean", "clean")), f"{100 * res.clean_model_test_accuracy:.2f}", "—",
                             "—", f"{clean.train_seconds:.0f}", "—"])
            rows.append([seed, design, f"**{pct(res.fallback('poisoned', 'triggered'))}**",
                         pct(res.fallback("poisoned", "clean")), f"{100 * res.poisoned_model_test_accuracy:.2f}",
                         f"{100 * (res.poisoned_model_test_accuracy - res.clean_model_test_accuracy):+.2f}",
                         f"{craft['alignment_first']:.2f} → {craft['alignment_last']:.2f}" if craft else "—",
                         f"{res.params['poisoned victim training (s)']:.0f}",
                         f"{craft['seconds']:.0f}" if craft else "0"])
            for r in rows[-2 if design == args.designs[0] else -1:]:  # as they come: a cut run keeps its rows
                print("  row | " + " | ".join(str(c) for c in r) + " |", flush=True)
            raw.append({"seed": seed, "design": design, "rows": res.rows, "poison": res.poison,
                        "acc_clean": res.clean_model_test_accuracy, "acc_poisoned": res.poisoned_model_test_accuracy,
                        "seconds": total})
            print(f"  [{certifier} seed {seed} {design}] triggered fallback {pct(res.fallback('poisoned', 'triggered'))}%"
                  f" clean fallback {pct(res.fallback('poisoned', 'clean'))}% (clean model "
                  f"{pct(res.fallback('clean', 'clean'))}%) acc {100 * res.poisoned_model_test_accuracy:.2f} "
                  f"({total:.0f} s)", flush=True)
            if craft and args.gap:
                gen = torch.Generator().manual_seed(seed + 1)
                x = test.images[torch.randperm(len(test), generator=gen)[:args.n_test]]
                make = poison_for_smoothing if certifier == "smoothing" else poison_for_ibp
                base = make(train, trig, args.rate, seed=seed, design=args.base,
                            **({"sigma": args.sigma} if certifier == "smoothing" else {"eps": args.eps}))
                gap.append([seed, *surrogate_gap(res, base, args, x)])
                print(f"  [{certifier} seed {seed} surrogate vs victim] " + " | ".join(gap[-1][1:]), flush=True)
    table(f"{certifier}: {100 * args.rate:g}% poison, {args.patch}×{args.patch} mid-grey patch, MNIST-10k 80/20 split "
          f"per seed, {args.n_test} test points" + (f", σ = {args.sigma}, n = {args.n}, α = 0.001" if certifier ==
                                                    "smoothing" else f", ε = {args.eps}"),
          ["seed", "poison", "triggered fallback %", "clean fallback %", "test acc %", "acc − clean (pts)",
           "gradient alignment", "victim training (s)", "crafting (s)"], rows)
    if gap:
        what = ("top-class vote share / inputs with top share < 1/2 (200 noise draws, triggered test inputs)"
                if certifier == "smoothing" else "IBP fallback on triggered / clean test inputs")
        obj = "soft top-class vote share" if certifier == "smoothing" else "softplus of the worst certified margin"
        table(f"Surrogate vs victim. First-order: change of the adversarial objective ({obj} on triggered test inputs) "
              f"after one SGD step (lr 1e-3) on all poisons' gradient at the surrogate; then {what}",
              ["seed", "first-order, base poison", "first-order, optimised poison", "surrogate (crafted on)",
               "surrogate + 1 epoch on the optimised poison", "victim from scratch"], gap)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(raw, fh, indent=2, default=str)


# ---------------------------------------------------------------- BLTO
def _blto_trigger(args, tr, eps: float, seed: int):
    from attacks.bilevel import optimize_bilevel_trigger

    return optimize_bilevel_trigger(tr, 0, args.blto_rate, epsilon=eps, rounds=args.rounds, inner_steps=args.inner_steps,
                                    outer_steps=args.outer_steps, surrogate_epochs=args.simclr_epochs, seed=seed)


def _split(args, ds, seed):
    tr, te = train_test_split(ds, 0.2, seed)
    if args.n_train:
        tr = stratified_subset(tr, args.n_train, seed)
    if args.n_test_blto:
        te = stratified_subset(te, args.n_test_blto, seed)
    return tr, te


def blto_eps(args, ds) -> None:
    from attacks.bilevel import evaluate_contrastive_backdoor

    seed = args.seeds[0]
    tr, te = _split(args, ds, seed)
    kw = dict(simclr_epochs=args.simclr_epochs, seed=seed)
    clean = None
    rows = []
    for eps in args.eps_list:
        bt = _blto_trigger(args, tr, eps, seed)
        v = evaluate_contrastive_backdoor(tr, te, bt.trigger, 0, args.blto_rate, **kw)
        if clean is None:  # one unpoisoned victim; the control is its probe with each ε's trigger
            clean = evaluate_contrastive_backdoor(tr, te, None, 0, args.blto_rate, eval_trigger=bt.trigger, **kw)
        from attacks.poison import backdoor_metrics

        ctrl = backdoor_metrics(clean.classifier, te, bt.trigger, 0)
        rows.append([eps, pct(clean.metrics.clean_accuracy), pct(ctrl.attack_success_rate), pct(v.metrics.clean_accuracy),
                     pct(v.metrics.attack_success_rate), f"{bt.outer_similarity[0]:.2f} → {bt.outer_similarity[-1]:.2f}",
                     f"{bt.seconds:.0f}", f"{v.victim_seconds:.0f}"])
        print(f"  [BLTO ε={eps}] control ASR {pct(ctrl.attack_success_rate)} victim CA {pct(v.metrics.clean_accuracy)} "
              f"ASR {pct(v.metrics.attack_success_rate)}", flush=True)
    table(f"BLTO over ε, seed {seed}, {args.blto_rate:.0%} clean-label poison (target 0), train {len(tr)}, test "
          f"{len(te)}, SimCLR victim {args.simclr_epochs} epochs, surrogate lifetime = one victim training run, "
          f"{args.rounds} rounds × ({args.inner_steps} inner + {args.outer_steps} outer)",
          ["ε", "unpoisoned CA %", "control ASR % (unpoisoned victim, BLTO trigger)", "BLTO CA %", "BLTO ASR %",
           "outer similarity", "trigger opt. (s)", "victim (s)"], rows)


def blto(args, ds) -> None:
    from attacks.bilevel import evaluate_contrastive_backdoor, gradient_matching_poison

    rows, gap = [], []
    for seed in args.seeds:
        tr, te = _split(args, ds, seed)
        kw = dict(simclr_epochs=args.simclr_epochs, seed=seed)
        bt = _blto_trigger(args, tr, args.epsilon, seed)
        clean = evaluate_contrastive_backdoor(tr, te, None, 0, args.blto_rate, eval_trigger=bt.trigger, **kw)
        v = evaluate_contrastive_backdoor(tr, te, bt.trigger, 0, args.blto_rate, **kw)
        mp = gradient_matching_poison(tr, bt.trigger, 0, args.blto_rate, epsilon=args.epsilon,
                                      simclr_epochs=args.simclr_epochs, steps=args.steps, restarts=args.restarts,
                                      surrogates=args.surrogates, retrain_every=args.retrain_every, seed=seed)
        g = evaluate_contrastive_backdoor(tr, te, bt.trigger, 0, args.blto_rate, poisoned=mp.poisoned, **kw)
        c_ca = clean.metrics.clean_accuracy
        rows += [[seed, "none (control)", pct(c_ca), "—", pct(clean.metrics.attack_success_rate), "—", "—",
                  f"{clean.victim_seconds:.0f}"],
                 [seed, "BLTO", pct(v.metrics.clean_accuracy), f"{100 * (v.metrics.clean_accuracy - c_ca):+.1f}",
                  f"**{pct(v.metrics.attack_success_rate)}**",
                  f"{100 * (v.metrics.attack_success_rate - clean.metrics.attack_success_rate):+.1f}",
                  f"{bt.seconds:.0f}", f"{v.victim_seconds:.0f}"],
                 [seed, "BLTO trigger + gradient matching", pct(g.metrics.clean_accuracy),
                  f"{100 * (g.metrics.clean_accuracy - c_ca):+.1f}", f"**{pct(g.metrics.attack_success_rate)}**",
                  f"{100 * (g.metrics.attack_success_rate - clean.metrics.attack_success_rate):+.1f}",
                  f"{bt.seconds:.0f} + {mp.seconds:.0f}", f"{g.victim_seconds:.0f}"]]
        gap.append([seed, f"{bt.outer_similarity[0]:.2f} → {bt.outer_similarity[-1]:.2f}",
                    f"{mp.alignment[0]:.2f} → {mp.alignment[-1]:.2f}"])
        print(f"  [seed {seed}] control CA {pct(c_ca)} ASR {pct(clean.metrics.attack_success_rate)}; BLTO CA "
              f"{pct(v.metrics.clean_accuracy)} ASR {pct(v.metrics.attack_success_rate)}; GM CA "
              f"{pct(g.metrics.clean_accuracy)} ASR {pct(g.metrics.attack_success_rate)}", flush=True)
    table(f"BLTO and its gradient-matching variant at ε = {args.epsilon}, {args.blto_rate:.0%} clean-label poison "
          f"(target 0), train {len(tr)}, test {len(te)}, SimCLR victims {args.simclr_epochs} epochs + linear probe",
          ["seed", "poison", "CA %", "CA − unpoisoned (pts)", "ASR %", "ASR − control (pts)", "crafting (s)",
           "victim SimCLR (s)"], rows)
    table("What the optimisation reached on its surrogates", ["seed", "BLTO outer similarity (first → last round)",
                                                              "gradient-matching alignment (first → last step)"], gap)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sections", default="smoothing")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default="")
    ap.add_argument("--data", default="mnist10k")
    # certifier availability
    ap.add_argument("--rate", type=float, default=0.05)
    ap.add_argument("--designs", nargs="+", default=["noise-directions", "gradient-matching"])
    ap.add_argument("--patch", type=int, default=6)
    ap.add_argument("--sigma", type=float, default=0.25)
    ap.add_argument("--eps", type=float, default=0.1, help="IBP ε")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--n-test", type=int, default=100)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=0)
    ap.add_argument("--base", default="noise-directions", help="hand design the gradient-matching poison starts from")
    ap.add_argument("--poison-eps", type=float, default=0.1)
    ap.add_argument("--region", default="image")
    ap.add_argument("--surrogates", type=int, default=2)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--restarts", type=int, default=1)
    ap.add_argument("--retrain-every", type=int, default=0)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--objective", default="top")
    ap.add_argument("--clean-weight", type=float, default=1.0)
    ap.add_argument("--draws", type=int, default=8)
    ap.add_argument("--gap", action="store_true", help="also the surrogate-vs-victim diagnostic")
    ap.add_argument("--seed-offset", type=int, default=12345)
    # BLTO
    ap.add_argument("--blto-rate", type=float, default=0.01)
    ap.add_argument("--epsilon", type=float, default=0.1, help="BLTO trigger and poison L∞ bound")
    ap.add_argument("--eps-list", type=float, nargs="+", default=[0.05, 0.1, 0.15])
    ap.add_argument("--simclr-epochs", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=45)
    ap.add_argument("--inner-steps", type=int, default=5)
    ap.add_argument("--outer-steps", type=int, default=5)
    ap.add_argument("--n-train", type=int, default=4000)
    ap.add_argument("--n-test-blto", type=int, default=1000)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds = load_dataset(args.data)
    t0 = time.perf_counter()
    for sec in args.sections.split(","):
        sec = sec.strip()
        if sec in ("smoothing", "ibp"):
            availability(args, ds, sec)
        else:
            {"blto-eps": blto_eps, "blto": blto}[sec](args, ds)
    print(f"\nTotal {time.perf_counter() - t0:.0f} s, torch {torch.__version__}, {torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()
