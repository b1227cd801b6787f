"""report.md of an evaluation (the paper's tables with our numbers, the paper's and chance) and
its TensorBoard summaries.

Everything here is a function of the metrics dict that `evaluation.run_evaluation` returns and
writes to metrics.json, so a report can be rebuilt from that file alone.
"""

import os

import numpy as np
import tensorflow as tf

from speech2face.evaluation import craniofacial
from speech2face import losses, metrics

KS = metrics.DEFAULT_KS
METRIC_NAMES = {"cos": "cosine", "l2": "L2", "l1": "L1"}

# The paper's numbers (docs/evaluation.md). Retrieval: 5,000-face gallery; None where the paper
# gives none.
PAPER = {
    "distances": {
        "6": {"cos_deg": (45.75, 5.09), "l2": (0.18, 0.02), "l1": (9.42, 1.54)},
        "3": {"cos_deg": (48.43, 6.01), "l2": (0.19, 0.03), "l1": (9.81, 1.74)},
    },
    "retrieval": {
        "6": {"cos": (10.92, 17.00, 30.60, 45.82), "l2": (8.28, 13.66, 24.66, 35.84)},
        "3": {"cos": (8.54, 13.64, 24.80, 38.54)},
    },
    "random_row": (1.0, 2.0, 5.0, 10.0),
    "gallery_size": 5000,
}
# The paper's L2/L1 look like distances between vectors of norm ≈ 0.232 (metrics.py,
# `feature_distances`); ours are on unit vectors. Dividing theirs by this compares like with like.
PAPER_FEATURE_SCALE = 0.232


def _loss_weights(loss) -> str:
    """The encoder's loss weights as exported, each that differs from the paper's named."""
    if not loss:
        return "not recorded by this export"
    paper = {"lambda1": losses.LAMBDA1, "lambda2": losses.LAMBDA2,
             "temperature": losses.TEMPERATURE}
    symbols = {"lambda1": "λ1", "lambda2": "λ2", "temperature": "T"}
    parts = []
    for key, symbol in symbols.items():
        value = loss.get(key)
        if value is None:
            continue
        text = f"{symbol} = {value:g}"
        if value != paper[key]:
            text += f" (**the paper's is {paper[key]:g}**)"
        parts.append(text)
    return ", ".join(parts)


def _ms(pair, digits=2):
    return f"{pair[0]:.{digits}f} ± {pair[1]:.{digits}f}"


def _row(cells):
    # A "|" inside a cell (e.g. "|p31 − p35|") would end the cell: escape it.
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def _table(header, rows, align=None):
    align = align or ["---"] * len(header)
    return "\n".join([_row(header), _row(align)] + [_row(r) for r in rows])


def format_retrieval_table(result) -> str:
    """Plain-text retrieval table (recall@K %, ours beside chance), e.g. for the demo's log."""
    lines = [f"S2F -> face retrieval among {result['gallery_size']} faces (recall@K, %):",
             f"  {'input':<6} {'distance':<9}" + "".join(f"{'R@' + str(k):>8}" for k in KS)]
    for key, numbers in result["durations"].items():
        for metric in METRIC_NAMES:
            recall = numbers["retrieval"][metric]
            lines.append(f"  {key + ' s':<6} {METRIC_NAMES[metric]:<9}"
                         + "".join(f"{recall[str(k)]:8.2f}" for k in KS))
    chance = next(iter(result["durations"].values()))["chance"]
    lines.append(f"  {'chance':<16}" + "".join(f"{chance[str(k)]:8.2f}" for k in KS))
    return "\n".join(lines)


def format_report(result) -> str:
    """report.md from the metrics dict of `run_evaluation` (what metrics.json holds)."""
    n, keys = result["gallery_size"], list(result["durations"])
    enc = result.get("encoder") or {}
    dataset = result.get("dataset")
    lines = ["# Speech2Face evaluation", ""]
    if "train" in result.get("splits", ()):
        lines += ["**These records are (partly) the TRAINING split: the numbers below are not "
                  "held-out results, and the attribute probes were fitted on the same kind of "
                  "data they score.**", ""]
    gallery = f"{n} faces: the first {n} test clips, each a query matched with its own face"
    if result["all_test_examples_used"]:
        gallery += (f". The test set holds fewer than the {result['gallery_size_requested']} "
                    f"requested, so all {n} of its clips are used")
    if result["distinct_gallery_faces"] < n:
        gallery += (f". Only {result['distinct_gallery_faces']} distinct face features: clips "
                    "sharing a face tie with it, and ties count for the query")
    about = [
        ("Voice encoder", f"`{result['model_dir']}` (preset `{enc.get('preset')}`, training "
                          f"step {result['step']})"),
        ("Loss weights", _loss_weights(enc.get("loss"))),
        ("Face decoder", f"`{result['decoder_dir']}`"),
        ("Face features", f"VGG-Face weights `{enc.get('vggface_weights')}`"),
        ("Test records", f"`{result['records']}` ({result['record_files']} files)"),
        ("Gallery", gallery),
        ("Speakers", str(result["num_speakers"])),
    ]
    if dataset:
        note = dataset.get("name") or "records built by data_prep"
        if dataset.get("seed") is not None:
            note += f" (seed {dataset['seed']})"
        if dataset.get("vggface_random"):
            note += ("; its face features come from a seeded RANDOM VGG-Face network (no "
                     "pretrained weights here), so numbers are not comparable with the paper's")
        about.append(("Data set", note))
    about.append(("Written", result["written"]))
    lines += [_table(["", ""], [(f"**{a}**", b) for a, b in about]), ""]

    lines += _deviation_section(result.get("differs_from_paper") or {})
    lines += ["## Feature similarity between v_s and v_f", "",
              "Mean ± std over test clips, features L2-normalised first (*raw features*: as "
              "they are, which the paper's L2 and L1 appear to be). *Mismatched*: v_s "
              "against the face of a random clip of another speaker (what no information "
              "gives).", ""]
    rows = []
    for key in keys:
        numbers = result["durations"][key]
        d = numbers["distances"]
        rows.append([f"{key} s", "ours", _ms(d["cos_deg"]), _ms(d["l2"], 3), _ms(d["l1"])])
        paper = PAPER["distances"].get(key)
        if paper:
            rows.append([f"{key} s", "paper", _ms(paper["cos_deg"]),
                         f"{_ms(paper['l2'])} (÷{PAPER_FEATURE_SCALE}: "
                         f"{paper['l2'][0] / PAPER_FEATURE_SCALE:.2f})",
                         f"{_ms(paper['l1'])} (÷{PAPER_FEATURE_SCALE}: "
                         f"{paper['l1'][0] / PAPER_FEATURE_SCALE:.1f})"])
        raw = numbers.get("raw", {}).get("distances")
        if raw:
            rows.append([f"{key} s", "ours, raw features", _ms(raw["cos_deg"]), _ms(raw["l2"], 3),
                         _ms(raw["l1"])])
        if numbers["distances_mismatched"]:
            m = numbers["distances_mismatched"]
            rows.append([f"{key} s", "mismatched", _ms(m["cos_deg"]), _ms(m["l2"], 3),
                         _ms(m["l1"])])
    lines += [_table(["Input", "", "Angle (°)", "L2", "L1"], rows), "",
              f"L2 and L1 scale: ours are distances between unit vectors, where the angle fixes "
              f"L2 = 2·sin(θ/2) (0.78 at the paper's 45.75°) and a dense 4096-D difference has "
              f"L1 ≈ 51 × L2 (≈ 40 at that angle). The "
              f"paper's L2/L1 are consistent with its angles only for vectors of norm ≈ "
              f"{PAPER_FEATURE_SCALE} (see `speech2face.metrics.feature_distances`), so compare "
              f"ours with the paper's divided by {PAPER_FEATURE_SCALE} (in brackets); the "
              "angles compare directly.", ""]

    lines += ["## S2F → face retrieval", "",
              f"Recall@K (%): the share of queries whose own face is among the K nearest of the "
              f"gallery ({n} faces here; the paper's: {PAPER['gallery_size']}). Chance is "
              f"100·K/{n} for our gallery; the paper's \"random\" row (1, 2, 5, 10) fits a "
              "100-face gallery.", ""]
    rows = []
    for key in keys:
        numbers = result["durations"][key]
        for metric, name in METRIC_NAMES.items():
            recall = numbers["retrieval"][metric]
            rows.append([f"{key} s", name, "ours"] + [f"{recall[str(k)]:.2f}" for k in KS])
            raw = numbers.get("raw", {}).get("retrieval", {}).get(metric)
            if raw and metric != "cos":
                rows.append([f"{key} s", name, "ours, raw features"]
                            + [f"{raw[str(k)]:.2f}" for k in KS])
            paper = PAPER["retrieval"].get(key, {}).get(metric)
            if paper:
                rows.append([f"{key} s", name, "paper"] + [f"{v:.2f}" for v in paper])
    chance = result["durations"][keys[0]]["chance"]
    rows.append(["any", "—", f"chance, {n} faces"] + [f"{chance[str(k)]:.2f}" for k in KS])
    paper_chance = metrics.chance_recall(PAPER["gallery_size"], KS)
    rows.append(["any", "—", f"chance, {PAPER['gallery_size']} faces"]
                + [f"{paper_chance[k]:.2f}" for k in KS])
    rows.append(["any", "—", "paper's \"random\""] + [f"{v:.0f}" for v in PAPER["random_row"]])
    lines += [_table(["Input", "Distance", "Source"] + [f"R@{k}" for k in KS], rows,
                     ["---"] * 3 + ["---:"] * len(KS)), "",
              "On L2-normalised features L2 ranks exactly as cosine does, so their rows "
              "agree; the paper's lower L2 row can only come from features of unequal norms, "
              "hence the raw-feature rows (cosine is the same either way).",
              ""]
    lines += _craniofacial_section(result, keys)
    lines += _attribute_section(result, keys)
    lines += ["## Figures", ""]
    for name, path in (result.get("files") or {}).get("figures", {}).items():
        lines.append(f"- {name}: `{os.path.basename(path)}`")
    return "\n".join(lines) + "\n"


def _deviation_section(differs) -> list:
    """Every recorded setting of the two training runs that is not the paper's."""
    lines = ["## Settings that differ from the paper", "",
             "From each training run's `config.json` (the reasons: docs/design_decisions.md). "
             "The data set's own departures, such as random VGG-Face weights, are above.", ""]
    rows = []
    for stage in ("decoder", "encoder"):
        entries = differs.get(stage)
        if entries is None:
            rows.append([stage, "—", "not recorded by this run", ""])
        elif not entries:
            rows.append([stage, "—", "none: the paper's settings", ""])
        for name, values in sorted((entries or {}).items()):
            rows.append([stage, f"`{name}`", f"{values['run']}", f"{values['paper']}"])
    return lines + [_table(["Stage", "Setting", "This run", "Paper"], rows), ""]


def _fmt(x, spec=".2f"):
    return "—" if x is None else format(x, spec)


def _r(entry, table_missing="fewer than 3 faces"):
    """An r cell: the value, or "n/a: why"."""
    if entry is None:
        return f"n/a: {table_missing}"
    return f"n/a: {entry['reason']}" if entry["r"] is None else f"{entry['r']:.2f}"


def _p(entry):
    return "n/a" if entry is None or entry["p_value"] is None else f"{entry['p_value']:.2g}"


def _craniofacial_section(result, keys):
    info = result.get("craniofacial") or {}
    es = [craniofacial.exaggeration_key(e) for e in info.get("exaggerations", [0.0])]
    lines = ["## Craniofacial measurements: F2F vs S2F", "",
             "The paper's study (supplement): each measurement on the face decoded from the "
             "true face feature (F2F) and on the face decoded from speech (S2F), both from "
             f"landmarks detected on the decoded images ({info.get('landmarks')}); Pearson r "
             f"and scipy's p over the first {info.get('faces')} test clips. S2F at "
             "exaggeration e is decoded from mean + (1 + e)(v_s − mean) "
             "(`FaceDecoder.exaggerate`; F2F always from v_f itself). *Random |r|*: mean |r| "
             f"over {info.get('num_shuffles')} random F2F/S2F pairings. The paper (the authors' "
             "e = 0.7 renders): "
             + ", ".join(f"{name} {r}" for name, r in craniofacial.PAPER.items())
             + f", random {craniofacial.PAPER_RANDOM}. Distances and areas are pixels of the "
             "224 frame; \"≈\" marks dlib points standing in for an anthropometric point "
             "dlib does not place.", ""]
    for key in keys:
        tables = result["durations"][key].get("craniofacial_f2f_s2f") or {}
        header = ["Measurement", "Landmarks"]
        for e in es:
            header += [f"r (e = {e})", "p"]
        header += [f"random |r| (e = {es[-1]})", "paper r (e = 0.7)"]
        rows = []
        for name in craniofacial.MEASUREMENTS:
            row = [name, craniofacial.describe(name)]
            for e in es:
                entry = (tables.get(e) or {}).get(name)
                row += [_r(entry), _p(entry)]
            last = (tables.get(es[-1]) or {}).get(name) or {}
            row += [_fmt(last.get("baseline_abs_r"), ".3f"),
                    _fmt(craniofacial.PAPER.get(name)) if name in craniofacial.PAPER
                    else "not reported"]
            rows.append(row)
        lines += [f"**{key} s of speech**", "", _table(header, rows), ""]

    lines += ["Second source, the face decoder's landmark branch on the same faces (r; F2F "
              "vs S2F):", ""]
    header, columns = ["Measurement"], []
    for key in keys:
        for e in es:
            header.append(f"{key} s, e = {e}")
            tables = result["durations"][key].get("craniofacial_f2f_s2f_decoder_landmarks") or {}
            columns.append(tables.get(e) or {})
    rows = [[name] + [_r(c.get(name)) for c in columns] for name in craniofacial.MEASUREMENTS]
    lines += [_table(header, rows), ""]

    true_f2f = info.get("true_f2f")
    lines += ["Not the paper's comparison: the true face's stored landmarks (exact for the toy "
              "world, dlib's for real faces) against the landmark branch of S2F (e = 0) and of "
              "F2F (the decoder's own ceiling):", ""]
    header = ["Measurement"] + [f"true vs S2F, {key} s" for key in keys] + ["true vs F2F"]
    rows = [[name] + [_r((result["durations"][key].get("craniofacial_true_s2f") or {})
                         .get(name), "fewer than 3 faces with true landmarks") for key in keys]
            + [_r((true_f2f or {}).get(name), "fewer than 3 faces with true landmarks")]
            for name in craniofacial.MEASUREMENTS]
    return lines + [_table(header, rows), ""]


def _attribute_section(result, keys):
    lines = ["## Attributes of the true vs the reconstructed face", ""]
    classifiers = result.get("attribute_classifiers") or {}
    if not classifiers:
        return lines + ["No attribute classifier given. The paper used a commercial one "
                        "(Face++); plug any classifier in with `run_evaluation("
                        "attribute_classifiers=[...])` (see `speech2face.evaluation.attributes.AttributeClassifier`)"
                        " or `evaluate.py --attribute_classifier=module:factory`.", ""]
    f2f = result.get("attributes_f2f") or {}
    lines += ["Agreement (%) between the class of the true face and that of the reconstruction "
              "from speech (S2F); chance = agreement of independent labels with the same class "
              "shares; *F2F*: the same for the face decoded from v_f (the decoder's upper "
              "bound). Where the truth is known (toy world), also how often each matches it.",
              ""]
    header = ["Attribute", "Classes"] + [f"S2F {k} s" for k in keys] + [
        "F2F", "chance", "true face vs truth", f"S2F {keys[0]} s vs truth"]
    rows = []
    for name in classifiers:
        entries = [result["durations"][k]["attributes"][name] for k in keys]
        upper = f2f.get(name) or {"reason": "not computed"}
        rows.append([name, ", ".join(entries[0]["classes"])]
                    + [f"{e['agreement']:.1f}" for e in entries]
                    + [f"{upper['agreement']:.1f}" if "agreement" in upper
                       else f"n/a: {upper['reason']}",
                       f"{entries[0]['chance_agreement']:.1f}",
                       _fmt(entries[0].get("true_face_vs_truth"), ".1f"),
                       _fmt(entries[0].get("reconstruction_vs_truth"), ".1f")])
    lines += [_table(header, rows), ""]
    lines += ["Classifiers: " + "; ".join(f"`{k}`: {v}" for k, v in classifiers.items()), ""]
    lines += ["Confusion matrices, each row normalised to 100 % as the paper shows them (rows: "
              "class of the true face, columns: class of the reconstruction; n: true faces of "
              "the row):", ""]
    for name in classifiers:
        pairs = [(f"S2F, {keys[0]} s", result["durations"][keys[0]]["attributes"][name])]
        if "confusion" in (f2f.get(name) or {}):
            pairs.append(("F2F", f2f[name]))
        for label, entry in pairs:
            classes = entry["classes"]
            rows = [[f"**{c}**"] + (["—"] * len(classes) if pct is None
                                    else [f"{v:.1f}" for v in pct]) + [str(sum(counts))]
                    for c, pct, counts in zip(classes, entry["confusion_percent"],
                                              entry["confusion"])]
            lines += [f"*{name}, {label}*", "", _table([""] + list(classes) + ["n"], rows), ""]
    return lines


def write_eval_summaries(model_dir, result, grid=None, text=None) -> str:
    """TensorBoard scalars (`eval/retrieval_cos_r10_6s`, ...), the face grid and the report,
    at the model's training step, into `model_dir/eval` (beside the training curves)."""
    directory = os.path.join(model_dir, "eval")
    writer = tf.summary.create_file_writer(directory)
    with writer.as_default(step=result["step"]):
        for key, numbers in result["durations"].items():
            for metric, recall in numbers["retrieval"].items():
                for k, value in recall.items():
                    tf.summary.scalar(f"eval/retrieval_{metric}_r{k}_{key}s", value)
            for k, value in numbers["chance"].items():
                tf.summary.scalar(f"eval/chance_r{k}_{key}s", value)
            for name, (mean, _) in numbers["distances"].items():
                tf.summary.scalar(f"eval/distance_{name}_{key}s", mean)
            for e, table in (numbers["craniofacial_f2f_s2f"] or {}).items():
                for name, entry in table.items():
                    if entry["r"] is not None:
                        tf.summary.scalar(f"eval/craniofacial_r_{name}_{key}s_e{e}", entry["r"])
            for name, entry in numbers["attributes"].items():
                tf.summary.scalar(f"eval/attribute_agreement_{name}_{key}s", entry["agreement"])
        if grid is not None:
            tf.summary.image("eval/faces_true_vf_vs", np.asarray(grid)[None], max_outputs=1)
        if text is not None:
            tf.summary.text("eval/report", text)
    writer.flush()
    writer.close()
    return directory
