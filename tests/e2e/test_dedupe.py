"""`tessera dedupe` on the command line: generate a labelled population, de-duplicate
it, score the clusters file here against the truth column, save and reuse the
model, and bad input refused with what to fix."""

from __future__ import annotations

import csv
import json
from collections import defaultdict

NAMES_DOB = "first_name=first_name,last_name=last_name,date_of_birth=date_of_birth"
MULTI = NAMES_DOB + ",phone=phone,email=email,postcode=postcode"


def pairs_of(labels: list[str]) -> set[tuple[int, int]]:
    members = defaultdict(list)
    for i, label in enumerate(labels):
        members[label].append(i)
    return {(g[x], g[y]) for g in members.values() for x in range(len(g)) for y in range(x + 1, len(g))}


def f1(truth: set, predicted: set) -> tuple[float, float, float]:
    hits = len(truth & predicted)
    p = hits / len(predicted) if predicted else 1.0
    r = hits / len(truth) if truth else 1.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def generate(cli, path, scenario, records=4000, seed=11):
    cp = cli("dedupe", "generate", "--scenario", scenario, "--records", str(records),
             "--seed", str(seed), "--out", str(path), check=True)
    assert "true pairs" in cp.stderr, cp.stderr
    return path


def score(population, clusters_path) -> tuple[float, float, float]:
    with open(population, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    with open(clusters_path, newline="", encoding="utf-8") as f:
        cluster_of = {r["record_id"]: r["cluster_id"] for r in csv.DictReader(f)}
    truth = pairs_of([r["person_id"] for r in rows])
    predicted = pairs_of([cluster_of[r["record_id"]] for r in rows])
    assert len(truth) > 100, "the generated set must hold duplicates"
    return f1(truth, predicted)


def test_generate_is_deterministic_and_labelled(cli, tmp_path):
    a = generate(cli, tmp_path / "a.csv", "names-phone", records=1000, seed=3)
    b = generate(cli, tmp_path / "b.csv", "names-phone", records=1000, seed=3)
    c = generate(cli, tmp_path / "c.csv", "names-phone", records=1000, seed=4)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    with open(a, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1000
    assert set(rows[0]) == {"record_id", "person_id", "source", "first_name", "last_name", "phone"}
    # A tenth of the records duplicate another record's person.
    assert len({r["person_id"] for r in rows}) == 900


def test_names_and_birth_dates_deduplicate_above_the_floor(cli, tmp_path):
    population = generate(cli, tmp_path / "people.csv", "names-dob")
    clusters = tmp_path / "clusters.csv"
    model = tmp_path / "model.json"
    cp = cli("dedupe", str(population), "--id", "record_id", "--field", NAMES_DOB,
             "--truth", "person_id", "--out", str(clusters), "--save-model", str(model), check=True)
    precision, recall, score_f1 = score(population, clusters)
    assert score_f1 >= 0.93, (precision, recall, score_f1, cp.stderr)
    # The parameters and the accuracy are reported.
    assert "parameters (estimated)" in cp.stderr and "blocking reached" in cp.stderr, cp.stderr
    saved = json.loads(model.read_text(encoding="utf-8"))
    assert [f["field"] for f in saved["weights"]["fields"]] == ["first_name", "last_name", "date_of_birth"]

    # The saved model scores the same data to the same clusters, without estimating.
    again = tmp_path / "again.csv"
    cp = cli("dedupe", str(population), "--id", "record_id", "--field", NAMES_DOB,
             "--model", str(model), "--out", str(again), check=True)
    assert "parameters (from --model)" in cp.stderr, cp.stderr
    assert score(population, again) == (precision, recall, score_f1)


def test_multi_source_population_deduplicates_above_the_floor(cli, tmp_path):
    population = generate(cli, tmp_path / "multi.csv", "multi-source", records=4000)
    clusters = tmp_path / "clusters.csv"
    cp = cli("dedupe", str(population), "--id", "record_id", "--field", MULTI,
             "--out", str(clusters), check=True)
    precision, recall, score_f1 = score(population, clusters)
    assert score_f1 >= 0.95, (precision, recall, score_f1, cp.stderr)


def test_bad_input_is_refused_with_what_to_fix(cli, tmp_path):
    cp = cli("dedupe", "generate", "--scenario", "names", "--out", str(tmp_path / "x.csv"))
    assert cp.returncode != 0 and "names-dob" in cp.stderr, cp.stderr
    cp = cli("dedupe", "generate", "--records", "0", "--out", str(tmp_path / "x.csv"))
    assert cp.returncode != 0 and "records must lie in" in cp.stderr, cp.stderr

    population = generate(cli, tmp_path / "people.csv", "names-dob", records=300)
    not_a_model = tmp_path / "model.json"
    not_a_model.write_text("{}", encoding="utf-8")
    cp = cli("dedupe", str(population), "--id", "record_id", "--field", NAMES_DOB,
             "--model", str(not_a_model), "--out", str(tmp_path / "c.csv"))
    assert cp.returncode == 1 and "not a model written by --save-model" in cp.stderr, cp.stderr

    # A model saved for other fields says so.
    model = tmp_path / "phone-model.json"
    phones = generate(cli, tmp_path / "phones.csv", "names-phone", records=2000)
    cli("dedupe", str(phones), "--id", "record_id",
        "--field", "first_name=first_name,last_name=last_name,phone=phone",
        "--out", str(tmp_path / "p.csv"), "--save-model", str(model), check=True)
    cp = cli("dedupe", str(population), "--id", "record_id", "--field", NAMES_DOB,
             "--model", str(model), "--out", str(tmp_path / "c.csv"))
    assert cp.returncode == 1 and "run without --model" in cp.stderr, cp.stderr

    cp = cli("dedupe", str(population), "--id", "record_id", "--field", NAMES_DOB,
             "--truth", "nobody", "--out", str(tmp_path / "c.csv"))
    assert cp.returncode == 1 and 'no column "nobody"' in cp.stderr, cp.stderr
