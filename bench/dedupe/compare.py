#!/usr/bin/env python3
"""De-duplication accuracy: `tessera dedupe` beside Python recordlinkage, same sets, same run.

For each labelled set — the generated names+date-of-birth, names+phone and
multi-source populations (`tessera dedupe generate`), and FEBRL 1-3 when their
folder is given — it runs:

- `tessera dedupe` with its defaults (blocking, estimation, default threshold), and
  scores the clusters file it writes against the truth column, here, independently
  of tessera's own report;
- recordlinkage 0.16: a union of blocking indexes (phonetic surname + birth year,
  phonetic given name + date of birth, sorted neighbourhood on the surname, the
  phone), binary comparison features (Jaro-Winkler >= 0.85 on names, exact date
  of birth and swapped day/month, the last nine phone digits, email, postcode)
  and its unsupervised ECM classifier, scored as links and as connected components.

Pairwise precision / recall / F1 count every true pair (not only blocked ones).
Prints a Markdown table. Usage:

    bench/dedupe/run.sh                      (sets up the venv, then runs this)
    python compare.py --tessera target/release/tessera --work /tmp/dedupe-bench \
        [--records 10000] [--seed 42] [--febrl DIR]
"""

import argparse
import os
import re
import subprocess
import sys
import time
from collections import defaultdict

import pandas as pd
import recordlinkage
from recordlinkage.preprocessing import phonetic


def true_pairs_of(labels):
    members = defaultdict(list)
    for i, label in enumerate(labels):
        members[label].append(i)
    pairs = set()
    for group in members.values():
        for x in range(len(group)):
            for y in range(x + 1, len(group)):
                pairs.add((group[x], group[y]))
    return pairs


def scores(truth_pairs, predicted_pairs):
    hits = len(truth_pairs & predicted_pairs)
    p = hits / len(predicted_pairs) if predicted_pairs else 1.0
    r = hits / len(truth_pairs) if truth_pairs else 1.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def components(n, links):
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in links:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[ra] = rb
    return [find(i) for i in range(n)]


def parse_date(text):
    """Dates as the generator and FEBRL write them, to YYYYMMDD digits."""
    text = str(text or "").strip()
    m = re.fullmatch(r"(\d{4})-(\d{2})-(\d{2})", text)
    if m:
        return m.group(1) + m.group(2) + m.group(3)
    m = re.fullmatch(r"(\d{2})/(\d{2})/(\d{4})", text)
    if m:
        return m.group(3) + m.group(2) + m.group(1)
    return re.sub(r"\D", "", text)


def clean(frame, columns):
    out = pd.DataFrame(index=frame.index)
    for column, kind in columns:
        values = frame[column].fillna("").astype(str)
        if kind in ("first_name", "last_name"):
            values = values.str.lower().str.replace(r"[^a-z]", "", regex=True)
        elif kind == "date_of_birth":
            values = values.map(parse_date)
        elif kind == "phone":
            values = values.str.replace(r"\D", "", regex=True).str[-9:]
        else:
            values = values.str.lower().str.strip()
        out[column] = values.replace("", None)
    return out


def recordlinkage_run(frame, columns):
    """Returns the predicted links as index pairs (i < j) and the candidate count."""
    kinds = dict((k, c) for c, k in columns)
    data = clean(frame, columns)
    first, last = kinds.get("first_name"), kinds.get("last_name")
    dob, phone = kinds.get("date_of_birth"), kinds.get("phone")
    data["_last_sdx"] = phonetic(data[last].fillna(""), "soundex")
    data["_first_sdx"] = phonetic(data[first].fillna(""), "soundex")
    indexer = recordlinkage.Index()
    if dob:
        data["_year"] = data[dob].fillna("").str[:4]
        indexer.block(["_last_sdx", "_year"])
        indexer.block(["_first_sdx", dob])
        indexer.block([last, dob])
    indexer.block([first, last])
    indexer.sortedneighbourhood(last, window=5, block_on=["_first_sdx"])
    if phone:
        indexer.block(phone)
    for column in ("email", "postcode", "soc_sec_id"):
        if column in data and data[column].notna().any() and column != "postcode":
            indexer.block(column)
    candidates = indexer.index(data)
    compare = recordlinkage.Compare()
    compare.string(first, first, method="jarowinkler", threshold=0.85, label="first")
    compare.string(last, last, method="jarowinkler", threshold=0.85, label="last")
    if dob:
        compare.exact(dob, dob, label="dob")
        data["_dob_swapped"] = data[dob].map(
            lambda d: d[:4] + d[6:8] + d[4:6] if isinstance(d, str) and len(d) == 8 else None
        )
        compare.exact(dob, "_dob_swapped", label="dob_swapped")
    if phone:
        compare.exact(phone, phone, label="phone")
    for column, kind in columns:
        if kind in ("email", "postcode", "street", "city", "street_number", "national_id", "state", "text"):
            if kind in ("street", "city", "text"):
                compare.string(column, column, method="jarowinkler", threshold=0.85, label=column)
            else:
                compare.exact(column, column, label=column)
    features = compare.compute(candidates, data)
    classifier = recordlinkage.ECMClassifier(binarize=None)
    links = classifier.fit_predict(features)
    positions = {label: i for i, label in enumerate(frame.index)}
    pairs = set()
    for a, b in links:
        i, j = positions[a], positions[b]
        pairs.add((min(i, j), max(i, j)))
    return pairs, len(candidates)


def tessera_run(binary, path, columns, work, name):
    out = os.path.join(work, f"{name}_clusters.csv")
    fields = ",".join(f"{c}={k}" for c, k in columns)
    started = time.monotonic()
    result = subprocess.run(
        [binary, "dedupe", path, "--id", "record_id", "--field", fields, "--out", out],
        capture_output=True,
        text=True,
        check=True,
    )
    seconds = time.monotonic() - started
    clusters = pd.read_csv(out, dtype=str)
    summary = result.stderr.strip().splitlines()
    return dict(zip(clusters["record_id"], clusters["cluster_id"])), seconds, summary


GENERATED = {
    "names-dob": [("first_name", "first_name"), ("last_name", "last_name"), ("date_of_birth", "date_of_birth")],
    "names-phone": [("first_name", "first_name"), ("last_name", "last_name"), ("phone", "phone")],
    "multi-source": [
        ("first_name", "first_name"),
        ("last_name", "last_name"),
        ("date_of_birth", "date_of_birth"),
        ("phone", "phone"),
        ("email", "email"),
        ("postcode", "postcode"),
    ],
}

FEBRL = [
    ("given_name", "first_name"),
    ("surname", "last_name"),
    ("street_number", "street_number"),
    ("address_1", "street"),
    ("address_2", "text"),
    ("suburb", "city"),
    ("postcode", "postcode"),
    ("state", "state"),
    ("date_of_birth", "date_of_birth"),
    ("soc_sec_id", "national_id"),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tessera", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--records", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--febrl", help="folder with febrlN_records.csv (optional)")
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)

    sets = []
    for scenario, columns in GENERATED.items():
        path = os.path.join(args.work, f"{scenario}.csv")
        subprocess.run(
            [args.tessera, "dedupe", "generate", "--scenario", scenario, "--records", str(args.records),
             "--seed", str(args.seed), "--out", path],
            check=True,
            capture_output=True,
        )
        sets.append((scenario, path, columns, "person_id"))
    if args.febrl:
        for name in ("febrl1", "febrl2", "febrl3"):
            path = os.path.join(args.febrl, f"{name}_records.csv")
            if os.path.exists(path):
                sets.append((name, path, FEBRL, "cluster_id"))

    rows = []
    for name, path, columns, truth_column in sets:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False).set_index("record_id", drop=False)
        truth = true_pairs_of(list(frame[truth_column]))
        clusters, t_seconds, summary = tessera_run(args.tessera, path, columns, args.work, name)
        labels = [clusters[r] for r in frame["record_id"]]
        t_pairs = true_pairs_of(labels)
        tp, tr, tf = scores(truth, t_pairs)
        started = time.monotonic()
        rl_links, rl_candidates = recordlinkage_run(frame, columns)
        rl_seconds = time.monotonic() - started
        lp, lr, lf = scores(truth, rl_links)
        rl_components = true_pairs_of(components(len(frame), rl_links))
        cp, cr, cf = scores(truth, rl_components)
        rows.append((name, len(frame), len(truth), tp, tr, tf, t_seconds, lp, lr, lf, cp, cr, cf, rl_candidates, rl_seconds))
        print(f"{name}: tessera F1 {tf:.4f}; recordlinkage links F1 {lf:.4f}, components F1 {cf:.4f}", file=sys.stderr)
        for line in summary:
            print(f"  tessera: {line}", file=sys.stderr)

    print("| set | records | true pairs | tessera P / R / **F1** (clusters) | tessera s | "
          "recordlinkage links P / R / **F1** | recordlinkage components P / R / F1 | rl candidates | rl s | F1 ratio tessera / rl links |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (name, n, t, tp, tr, tf, ts, lp, lr, lf, cp, cr, cf, rc, rs) in rows:
        print(f"| {name} | {n:,} | {t:,} | {tp:.4f} / {tr:.4f} / **{tf:.4f}** | {ts:.1f} | "
              f"{lp:.4f} / {lr:.4f} / **{lf:.4f}** | {cp:.4f} / {cr:.4f} / {cf:.4f} | {rc:,} | {rs:.1f} | {tf / lf if lf else float('inf'):.3f} |")


if __name__ == "__main__":
    main()
