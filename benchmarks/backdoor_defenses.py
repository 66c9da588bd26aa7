"""Benchmark: poison detectors and NAB against BadNets and Blended on MNIST-10k (default CNN).

For each attack and seed: poison 5% of the training split (target 0; BadNets 3×3 white patch,
Blended alpha 0.15 noise), train the victim, run the detectors (spectral signatures and activation
clustering on the victim's penultimate features and on the input of its first fully connected layer,
``head-input``; LGA with its own flooded-loss model), then NAB (default: spectral signatures at the
head input, VD pseudo labels) at each isolation ratio of ``--ratios`` (same scores, more flagged),
and the remove-the-detected-and-retrain baseline at the first ratio. Prints one line per run, the
NAB table, and the detector table (precision / recall at every ratio, AUROC, seconds), all measured
in this run.

    python benchmarks/backdoor_defenses.py --seeds 0 1 2 --attacks badnets blended --ratios 0.05
    python benchmarks/backdoor_defenses.py --nab-detector lga          # the paper's detector
"""

from __future__ import annotations

import argparse
import time

import torch

from attacks.backdoor import run_backdoor_attack
from defenses.detectors import HEAD_INPUT, DetectionResult, detect, detection_quality, flag_top
from defenses.nab import run_nab

DETECTORS = [("spectral", "penultimate"), ("ac", "penultimate"), ("spectral", HEAD_INPUT), ("ac", HEAD_INPUT),
             ("lga", None)]


def _key(method: str, layer: str | None) -> str:
    return method if layer is None else f"{method}@{layer}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="mnist10k")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--attacks", nargs="+", default=["badnets", "blended"])
    ap.add_argument("--rate", type=float, default=0.05)
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.05])
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--no-lga", action="store_true", help="skip LGA (unless NAB uses it)")
    ap.add_argument("--lga-epochs", type=int, default=2)
    ap.add_argument("--nab-detector", default="spectral", choices=["lga", "spectral", "ac"],
                    help="the detector whose flagged set NAB uses (the paper: lga; our default: spectral)")
    ap.add_argument("--nab-layer", default=HEAD_INPUT, choices=[HEAD_INPUT, "penultimate"],
                    help="feature layer of spectral / ac for NAB")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    nab_key = _key(args.nab_detector, None if args.nab_detector == "lga" else args.nab_layer)
    dets_to_run = [(m, la) for m, la in DETECTORS if not (m == "lga" and args.no_lga and nab_key != "lga")]
    det_rows, nab_rows = [], []
    for attack in args.attacks:
        for seed in args.seeds:
            t = time.perf_counter()
            att = run_backdoor_attack(args.data, attack, args.rate, 0, seed=seed, alpha=0.15)
            t_attack = time.perf_counter() - t
            pi = att.poisoned.poisoned_indices
            data = att.poisoned.dataset
            dets = {}
            for method, layer in dets_to_run:
                key = _key(method, layer)
                dets[key] = d = detect(method, data, att.model, args.ratios[0], layer=layer, seed=seed,
                                       poisoned_indices=pi, lga_epochs=args.lga_epochs)
                pr = [detection_quality(d.scores, flag_top(d.scores, r), pi) for r in args.ratios]
                det_rows.append([attack, seed, key, [(100 * q.precision, 100 * q.recall) for q in pr],
                                 d.quality.auroc, d.seconds])
                print(f"{attack} seed {seed} {key}: " + " ".join(
                    f"@{r:g} P {100 * q.precision:.1f} R {100 * q.recall:.1f}" for r, q in zip(args.ratios, pr))
                    + f" AUROC {d.quality.auroc:.3f} ({d.seconds:.1f} s)", flush=True)
            chosen = dets[nab_key]
            for k, ratio in enumerate(args.ratios):
                det = chosen if k == 0 else DetectionResult(chosen.method, chosen.scores,
                                                            flag_top(chosen.scores, ratio), ratio,
                                                            chosen.seconds, chosen.params).with_truth(pi)
                res = run_nab(args.data, attack, args.rate, 0, seed=seed, attack_result=att, detection=det,
                              baselines=(k == 0 and not args.no_baseline))
                res.seconds["attack"] = t_attack
                q = det.quality
                for r in res.rows():
                    if r.defense == "no defense" and k > 0:
                        continue
                    name = r.defense if r.defense == "no defense" else f"{r.defense} @{100 * ratio:g}%"
                    nab_rows.append([attack, seed, name, *r.cells()[1:6]])
                f = res.filter
                print(f"{attack} seed {seed} ratio {ratio} ({nab_key}: P {100 * q.precision:.1f} R "
                      f"{100 * q.recall:.1f}): " + " | ".join(
                          f"{r.defense}: CA {100 * r.clean_accuracy:.2f} ASR {100 * r.attack_success_rate:.2f} "
                          f"RA {100 * r.robust_accuracy:.2f} DER {r.der}" for r in res.rows())
                      + f" | pseudo-label acc {100 * res.pseudo_label_accuracy:.1f}% stamped {res.n_stamped}"
                      f" | filter: clean rej {100 * f.clean_rejection:.2f}% backdoor rej "
                      f"{100 * f.backdoor_rejection:.2f}% filtered ASR {100 * f.filtered_asr:.2f}% | seconds "
                      + ", ".join(f"{a} {b:.0f}" for a, b in res.seconds.items()), flush=True)
    print(f"\nNAB detector: {nab_key}\n\n| attack | seed | defense | CA % | ASR % | RA % | DER | time (s) |\n"
          "|---|---|---|---|---|---|---|---|")
    for a, s, name, ca, asr, ra, d, sec in nab_rows:
        print(f"| {a} | {s} | {name} | {ca:.2f} | {asr:.2f} | {ra:.2f} | {d} | {sec:.0f} |")
    cols = " | ".join(f"P / R @{r:g} %" for r in args.ratios)
    print(f"\n| attack | seed | detector | {cols} | AUROC | time (s) |\n|---|---|---|"
          + "---|" * len(args.ratios) + "---|---|")
    for a, s, m, pr, auc, sec in det_rows:
        print(f"| {a} | {s} | {m} | " + " | ".join(f"{p:.1f} / {r:.1f}" for p, r in pr)
              + f" | {auc:.3f} | {sec:.1f} |")


if __name__ == "__main__":
    main()
