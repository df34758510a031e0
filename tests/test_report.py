"""The publishable report: its numbers are the records', the Udacity lab's table sits beside them, HTML stands alone."""
import json
import re
import shutil

import pytest
import yaml

from bench import report, store, suite, tables
from bench.errors import SuiteErrors, UserError
from conftest import ROOT, tlbench

# The Udacity lab's table, as its write-up printed it.
DOCUMENTS = {"frozen": (0.655, 0.703, 50), "unfrozen": (0.506, 0.716, 142), "scratch": (0.192, 0.392, 142)}


def md_tables(md: str) -> list[list[list[str]]]:
    """Every Markdown table as rows of cells, header first, alignment row dropped."""
    out = []
    for chunk in re.split(r"\n\s*\n", md):
        lines = [line for line in chunk.splitlines() if line.startswith("|")]
        if len(lines) > 2:
            # a cell's own '|' is escaped: split on the others
            out.append([[c.strip() for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
                        for i, line in enumerate(lines) if i != 1])
    return out


def section(md: str, heading: str) -> str:
    return md.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]


@pytest.fixture
def results(golden):
    """The golden records as `tlbench run` leaves them: with the suite file that names the reference."""
    shutil.copy(ROOT / "suites" / "offline-default.yaml", golden / "suite.yaml")
    return golden


@pytest.fixture
def md(results):
    report.write(results)
    return (results / "report.md").read_text()


def test_reference_is_kept_as_data_with_the_documents_numbers():
    ref = report.load_reference("udacity-lab")
    assert ref["epochs"] == [1, 5]
    for mode, (at1, at5, seconds) in DOCUMENTS.items():
        assert ref["rows"][mode] == {"val_acc": {1: at1, 5: at5}, "epoch_seconds": seconds}
    assert "unnamed" in ref["hardware"] and "InceptionV3" in ref["protocol"] and "14.6" in ref["source"]
    assert ref["short"] == "Udacity lab" and "Self-Driving Car Nanodegree" in ref["source"]
    with pytest.raises(UserError, match="valid: udacity-lab"):
        report.load_reference("nope")


def test_measured_table_equals_the_records(results, md):
    table, epochs = tables.summarise(store.read_runs(results))
    assert epochs == [1, 3]
    measured, unfinished = md_tables(section(md, "Measured"))
    assert measured[0] == ["Training Mode", "Val Acc @ 1 epoch", "Val Acc @ 3 epoch", "Time per epoch", "First epoch"]
    for cells, (_, row) in zip(measured[1:], table.iterrows()):
        assert cells[0] == row["label"]
        assert [c.split(" (")[0].split(" [")[0].split(" n=")[0] for c in cells[1:]] == [
            tables.pct(row["val_acc_1_median"]), tables.pct(row["val_acc_3_median"]),
            tables.secs(row["steady_epoch_seconds_median"]), tables.secs(row["first_epoch_seconds_median"])]
    assert measured[1][1] == "61.0% [60.5–61.5] n=2" and "n=1 (1 failed)" in measured[3][1]
    assert unfinished == [["Run", "Status", "Error"], ["mobilenet_v2-fashion_mnist-scratch-r1-165e8ff13a", "failed",
                                                       "RuntimeError: injected failure"]]


def test_documents_numbers_beside_ours_with_differences(results, md):
    table = tables.summarise(store.read_runs(results), [1, 3])[0].set_index("mode")
    beside, gaps = md_tables(section(md, "The Udacity lab's table beside ours"))
    assert beside[0][4] == "Val Acc @ 5 epoch (ours @ 3): Udacity lab"  # the golden runs stop at epoch 3
    for cells in beside[1:]:
        mode = {tables.mode_label(m): m for m in DOCUMENTS}[cells[0]]
        at1, at5, seconds = DOCUMENTS[mode]
        ours1, ours3 = table.loc[mode, "val_acc_1_median"], table.loc[mode, "val_acc_3_median"]
        steady = table.loc[mode, "steady_epoch_seconds_median"]
        assert cells[1:7] == [tables.pct(at1), tables.pct(ours1), f"{100 * (ours1 - at1):+.1f} pts",
                              tables.pct(at5), tables.pct(ours3), f"{100 * (ours3 - at5):+.1f} pts"]
        assert cells[7:9] == [tables.secs(seconds), tables.secs(steady)]
        assert float(cells[9].rstrip("×")) == pytest.approx(steady / seconds, rel=0.05)
    assert beside[1][3] == "-4.5 pts" and beside[1][9] == "0.10×"  # 61.0 - 65.5; 5.0 s / 50 s
    # the shape: unfrozen against frozen at epoch 1, documents 50.6 - 65.5, ours 45.0 - 61.0
    assert gaps[1][:3] == ["Unfrozen weights", "-14.9 pts", "-16.0 pts"]
    # 142 / 50; ours 20.5 / 5.0: medians of every steady epoch (frozen 5, 5, 5, 6 s)
    assert gaps[1][5:] == ["2.8×", "4.1×"]


def test_report_says_what_compares_and_names_its_sources_publicly(md):
    assert "what does is the shape: which mode is ahead and by how much" in md
    assert "The shape, which is what compares: each mode against Frozen weights" in md
    differs = re.search(r"Differs from the Udacity lab in: (.*)", md).group(1)
    for part in ["backbone (Udacity lab: inception_v3, ours: mobilenet_v2)", "dataset (Udacity lab: cifar10",
                 "hardware (Udacity lab: 2017–2019 hosted-notebook GPU, unnamed, ours: CPU: Test CPU)"]:
        assert part in differs
    assert ("The classic Udacity transfer-learning lab (InceptionV3 on CIFAR-10, 2017–2019): \"Lab: Transfer "
            "Learning\" of Udacity's Self-Driving Car Nanodegree") in md
    # nothing a reader of the report cannot follow: the project's own file names, internal document numbers
    for private in ("seed", "Seed", "README", "§", "documents", "/work/", "/shared/"):
        assert private not in md, private


def _edit_records(folder, change):
    for path in (folder / "runs").glob("*.json"):
        rec = json.loads(path.read_text())
        change(rec)
        path.write_text(json.dumps(rec))


def _markdown(folder) -> str:
    """The report's text without its figures (drawn and tested elsewhere), in a fraction of the time."""
    return report.markdown(store.scan(folder), [], folder)


def _shape(folder) -> str:
    return section(_markdown(folder), "The Udacity lab's table beside ours")


def test_no_shape_comparison_on_synthetic_data(results):
    _edit_records(results, lambda rec: rec["config"]["dataset_params"].update(type="synthetic"))
    part = _shape(results)
    assert len(md_tables(part)) == 1 and "Against Frozen weights" not in part
    assert "No shape comparison for this block: its data is synthetic (random class patterns" in part


def test_no_shape_comparison_at_chance_but_one_above_it(results):
    def at_chance(rec):
        rec["data"] = {"classes": 10, "val_images": 500}
        for e in rec["epochs"]:
            e["val_accuracy"] = 0.12  # within 10 % + 1.96 binomial standard errors over 500 images: 12.6 %
    _edit_records(results, at_chance)
    part = _shape(results)
    assert "Against Frozen weights" not in part
    assert ("No shape comparison for this block: every run of its modes ends at chance (validation accuracy at most "
            "12.6%, within the binomial noise of guessing one of 10 classes)") in part
    _edit_records(results, lambda rec: [e.update(val_accuracy=0.15) for e in rec["epochs"][-1:]
                                        if rec["config"]["mode"] == "frozen"])
    part = _shape(results)  # one mode that learnt: its gaps to the others are real
    assert "No shape comparison" not in part and md_tables(part)[1][0][0] == "Against Frozen weights"


def test_every_table_has_a_header_and_every_figure_a_caption_that_says_what_to_look_at(md):
    for table in md_tables(md):
        assert all(cell for cell in table[0]), table[0]
    captions = re.findall(r"!\[([^\]]+)\]\([^)]+\)\n\n_([^_]+)\._ (Look [^\n]+)", md)
    assert [(alt, title) for alt, title, _ in captions] == [
        ("Validation accuracy per epoch",) * 2, ("Time per epoch",) * 2,
        ("Validation accuracy against time spent, training + validation",) * 2]
    assert "Read across a row" in section(md, "Measured") and "Look at" in section(md, "Cost per run")


def test_cost_per_run_shows_parameters_flops_and_memory(results):
    def measured(rec):
        if rec["config"]["mode"] == "frozen":
            rec["flops"] = {"forward": 300_000_000, "train": 310_000_000, "uncounted": []}
            rec["memory"] = {"host_peak_rss_bytes": (1.5 + rec["config"]["repeat"]) * 2**30}
    _edit_records(results, measured)
    md = _markdown(results)
    (costs,) = md_tables(section(md, "Cost per run"))
    assert costs[0] == ["Training Mode", "Parameters: trainable / all", "GFLOPs per image: forward / training step",
                        "Peak host memory (RSS)", "Steady throughput"]  # no accelerator: no column of dashes
    assert costs[1][:4] == ["Frozen weights", "2,000,000 / 2,034,112", "0.3 / 0.31", "2.00 GiB"]  # median 1.5, 2.5
    assert costs[2][2:4] == ["—", "—"]  # records without FLOPs or memory say so, and the note says why
    assert "—: records made before tlbench counted FLOPs." in md


def test_report_holds_suite_environment_and_figures(results, md):
    assert md.startswith("# tlbench report: offline-default\n\nMobileNetV2 (torchvision ImageNet weights)")
    env = dict(row for row in md_tables(section(md, "Environment"))[0][1:])
    assert env == {"Hardware": "CPU: Test CPU · 2 cores", "TensorFlow": "2.21.0", "Keras": "3.15.1",
                   "Keras backend": "tensorflow",
                   "Git commit": "000000000000 (clean)", "Date of the runs": "2026-11-25",
                   "Runs": "6 (1 did not finish)"}
    images = re.findall(r"!\[[^\]]+\]\(([^)]+)\)", md)
    assert images == ["figures/accuracy.png", "figures/epoch_time.png", "figures/tradeoff.png"]
    assert all((results / image).is_file() for image in images)


def test_html_is_one_self_contained_file(results, md):
    page = (results / "report.html").read_text()
    assert "http://" not in page and "https://" not in page and 'src="figures/' not in page
    srcs = re.findall(r'src="([^"]*)"', page)
    assert len(srcs) == 3 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<td style=\"text-align:center\">61.0% [60.5–61.5] n=2</td>" in page
    assert "<h2>Environment</h2>" in page and "<th>Setting</th>" in page


def test_a_pipe_or_html_in_record_text_stays_in_its_cell(results):
    """An error message with '|' once split the regex converter's table cells; raw HTML must not pass through."""
    path = results / "runs" / "mobilenet_v2-fashion_mnist-scratch-r1-165e8ff13a.json"
    rec = json.loads(path.read_text())
    rec["error"] = "ValueError: shapes (None|3) and (4|5) differ\n<script>alert(1)</script>"
    path.write_text(json.dumps(rec))
    md = _markdown(results)
    unfinished = md_tables(section(md, "Measured"))[1]
    assert unfinished[1][2] == r"ValueError: shapes (None\|3) and (4\|5) differ <script>alert(1)</script>"
    page = report.to_html(md, results)
    assert ("<td>ValueError: shapes (None|3) and (4|5) differ &lt;script&gt;alert(1)&lt;/script&gt;</td>\n</tr>"
            in page) and "<script>" not in page


def test_report_without_suite_file_or_reference(golden):
    paths = report.write(golden)
    md = (golden / "report.md").read_text()
    assert md.startswith(f"# tlbench report: {golden.name}") and "table beside ours" not in md
    assert golden / "report.html" in paths


def test_report_elsewhere_with_out(results, tmp_path):
    report.write(results, tmp_path / "pub")
    assert (tmp_path / "pub" / "figures" / "accuracy.png").is_file()
    assert "](figures/accuracy.png)" in (tmp_path / "pub" / "report.md").read_text()
    assert not (results / "report.md").exists()


def test_same_protocol_says_only_hardware_differs(results):
    text = (results / "suite.yaml").read_text()
    (results / "suite.yaml").write_text(text.replace("name: offline-default", "name: same"))
    for path in (results / "runs").glob("*.json"):  # pretend the golden runs were the documents' protocol
        path.write_text(path.read_text().replace('"mobilenet_v2"', '"inception_v3"')
                        .replace('"fashion_mnist"', '"cifar10"').replace('"input_size": 96', '"input_size": 139')
                        .replace('"torchvision"', '"imagenet"'))
    report.write(results)
    md = (results / "report.md").read_text()
    assert "Differs from the Udacity lab in: hardware (" in md and "The protocol is the Udacity lab's own" in md


def test_suites_name_the_reference_and_unknown_names_are_located(write_suite):
    for name in ["offline-default", "udacity-inception-cifar10"]:
        assert suite.load(ROOT / "suites" / f"{name}.yaml").reference == "udacity-lab"
    assert suite.load(ROOT / "suites" / "smoke.yaml").reference is None
    path = write_suite("""\
        name: x
        reference: udacity
        matrix: {backbone: mobilenet_v2, dataset: synthetic, mode: frozen}
        """)
    with pytest.raises(SuiteErrors) as e:
        suite.load(path)
    assert [str(err) for err in e.value.errors] == [
        f"{path}:2: reference: unknown reference 'udacity' (did you mean 'udacity-lab'?); valid: udacity-lab"]


def test_every_reference_file_has_what_the_report_reads():
    for name in report.reference_names():
        ref = yaml.safe_load((report.REFERENCES / f"{name}.yaml").read_text())
        assert {"title", "short", "source", "hardware", "protocol", "epochs", "rows"} <= set(ref)
        for mode, row in ref["rows"].items():
            assert set(row["val_acc"]) == set(ref["epochs"]) and row["epoch_seconds"] > 0, (name, mode)


def test_markdown_to_html_handles_what_the_report_uses(tmp_path):
    (tmp_path / "a.png").write_bytes(b"\x89PNG")
    page = report.to_html("# T <1>\n\nsome **bold** `code`\ntext\n\n| a | b |\n|---|---:|\n| 1 | 2 |\n\n"
                          "![cap](a.png)\n\n- one\n- two", tmp_path)
    assert "<title>T &lt;1&gt;</title>" in page and "<h1>T &lt;1&gt;</h1>" in page
    assert "<p>some <strong>bold</strong> <code>code</code>\ntext</p>" in page
    assert '<th>a</th>\n<th style="text-align:right">b</th>' in page and '<td style="text-align:right">2</td>' in page
    assert '<img src="data:image/png;base64,iVBORw==" alt="cap" />' in page
    assert "<ul>\n<li>one</li>\n<li>two</li>\n</ul>" in page  # the left-out list, once run into a paragraph


def test_cli_report(results, tmp_path):
    p = tlbench("report", results)
    assert p.returncode == 0, p.stderr
    assert f"wrote {results / 'report.html'}" in p.stdout and (results / "report.md").is_file()
    p = tlbench("report", results, "--out", tmp_path / "pub")
    assert p.returncode == 0 and (tmp_path / "pub" / "report.html").is_file()
    p = tlbench("report", tmp_path / "nothing")
    assert p.returncode == 2 and "holds no results" in p.stderr


def test_the_diagnostics_section_lists_each_configuration_and_the_table_carries_their_marks(results):
    md = _markdown(results)
    measured = section(md, "Measured")
    assert "| Frozen weights | 61.0% [60.5–61.5] n=2 | 71.0% [70.5–71.5] n=2 | 5.0 s [5.0–5.2] n=4 | " \
           "11.5 s [11.2–11.8] n=2⁽¹⁾ |" in measured
    assert "\n1. compile-dominated (note): mobilenet_v2-fashion_mnist-frozen-r0-5e9b4c7536: epoch 1 took 12 s" \
           in measured
    items = [line for line in section(md, "Diagnostics").splitlines() if line.lstrip().startswith("- ")]
    assert items == [
        "- Frozen weights:",
        "  - note, compile-dominated (mobilenet_v2-fashion_mnist-frozen-r0-5e9b4c7536): epoch 1 took 12 s against 5 s "
        "for a steady one: most of it is one-off tracing and compilation, not training. Evidence: first / steady = 2.4",
        "  - note, compile-dominated (mobilenet_v2-fashion_mnist-frozen-r1-ae63b1da96): epoch 1 took 11 s against "
        "5.5 s for a steady one: most of it is one-off tracing and compilation, not training. Evidence: first / "
        "steady = 2.0",
        "- Unfrozen weights: none",
        "- No pre-trained weights:",
        "  - warning, too-few-samples (over its runs): one finished run: its accuracy and first epoch are a single "
        "sample, with no spread to tell a difference from run-to-run noise. Evidence: 1 of 2 runs finished",
        "  - warning, too-few-samples (over its runs): 2 steady epochs in all: too few for a time per epoch with a "
        "spread. Evidence: 2 < 3"]
    page = report.to_html(md, results)  # nested lists, and the footnotes as a numbered list
    assert "<li>Unfrozen weights: none</li>" in page and "<ol>\n<li>compile-dominated (note):" in page


def test_clean_records_say_none_plainly(tmp_path):
    """The published records this session's replaced (in superseded/), as a results folder of their own."""
    published = ROOT / "results" / "published" / "offline-default"
    (tmp_path / "runs").mkdir()
    for p in published.glob("superseded/*.json"):
        shutil.copy(p, tmp_path / "runs" / f"{json.loads(p.read_text())['run_id']}.json")
    md = report.markdown(store.scan(tmp_path), [], tmp_path)
    assert section(md, "Diagnostics").strip() == ("None: no run, and no configuration over its repeats, has a "
                                                  "diagnostic.")
    assert "⁽" not in md


def test_the_published_report_names_its_one_finding():
    folder = ROOT / "results" / "published" / "offline-default"
    diagnostics = section(report.markdown(store.scan(folder), [], folder), "Diagnostics")
    assert diagnostics.count("noisy-timing") == 1 and "mobilenet_v2-fashion_mnist-scratch-r2-6152a1ccee" in diagnostics
