"""Markdown report and plots of ``latency_peers.py`` (reads the dict it writes as JSON)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

MIB = 1 << 20


def _f(value: object, digits: int = 0) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _row(config: dict, startswith: str) -> dict | None:
    return next((r for r in config["rows"] if r["variant"].startswith(startswith)), None)


def _config(data: dict, n: int, width: int) -> dict | None:
    return next((c for c in data["configs"] if c["kind"] == "random" and c["num_entities"] == n and c["width"] == width), None)


def _round_ratio(slow: dict, fast: dict) -> float:
    """Median over rounds of ``slow``'s p50 / ``fast``'s p50 (rows timed in the same rounds)."""
    return float(np.median(np.array(slow["round_p50s_us"]) / np.array(fast["round_p50s_us"])))


def same_class_pairs(config: dict) -> dict[str, tuple[dict, dict]]:
    """Per model class (``ComplEx``...): its (kgedge int8 student, PyKEEN teacher-width) rows (``SAME_CLASS`` runs)."""
    pairs = {}
    for row in config["rows"]:
        if row["family"] == "same-class":
            cls = row["variant"].split()[1]
            pykeen = _row(config, f"pykeen score_t + topk {cls} (d=")
            if pykeen:
                pairs[cls] = (row, pykeen)
    return pairs


def goals(data: dict) -> list[dict[str, str]]:
    """The issue's goals, measured: one row each (value, goal, met)."""
    out = []
    for n, goal in ((1_000_000, 1.3), (100_000, 2.0)):
        config = _config(data, n, 64)
        if config is None:
            continue
        for path in ("EdgeModel", "session.run"):
            row = _row(config, f"onnx random int8 x86-avx2 ({path})") or next(
                (r for r in config["rows"] if r["family"] in ("onnx", "onnx-raw") and r["precision"] == "int8"
                 and path in r["variant"]), None)
            if row:
                out.append({"goal": f"int8 p50 at 1 thread / limit, N={n:,} d=64, {path}",
                            "measured": f"{row['ratio_to_limit']:.2f}x ({row['p50_us']:,.0f} us vs {row['limit_us']:,.0f} us)",
                            "target": f"<= {goal}x", "met": "yes" if row["ratio_to_limit"] <= goal else "no"})
    config = _config(data, 14_541, 64)
    if config is not None:
        pykeen = _row(config, "pykeen score_t")
        int8 = next((r for r in config["rows"] if r["family"] == "onnx" and r["precision"] == "int8"), None)
        if pykeen and int8:
            speedup = pykeen.get("ratio_to_int8_edge", pykeen["p50_us"] / int8["p50_us"])  # median of per-round ratios
            out.append({"goal": "speedup of int8 (EdgeModel) over PyKEEN score_t + topk, N=14,541 d=64",
                        "measured": f"{speedup:.1f}x ({pykeen['p50_us']:,.0f} us vs {int8['p50_us']:,.0f} us)",
                        "target": ">= 30x", "met": "yes" if speedup >= 30 else "no"})
            teacher = _row(config, "pykeen score_t + topk (d=256)")
            if teacher:  # the product path: PyKEEN serves the 256-dim model as trained, kgedge its int8 student
                speedup = teacher.get("ratio_to_int8_edge", teacher["p50_us"] / int8["p50_us"])
                out.append({"goal": "speedup of int8 (EdgeModel, 64 reals = 68 B/row) over PyKEEN score_t + topk "
                                    "serving the 256-dim fp32 model it was compressed from (1,024 B/row), N=14,541",
                            "measured": f"{speedup:.1f}x ({teacher['p50_us']:,.0f} us vs {int8['p50_us']:,.0f} us)",
                            "target": ">= 30x", "met": "yes" if speedup >= 30 else "no"})
            pairs = same_class_pairs(config)
            for cls, (kgedge, pykeen) in pairs.items():
                speedup = _round_ratio(pykeen, kgedge)
                out.append({"goal": f"speedup of int8 {cls} student (EdgeModel, {config['width']} reals per row) over "
                                    f"PyKEEN {cls} score_t + topk at dim 256, N=14,541",
                            "measured": f"{speedup:.1f}x ({pykeen['p50_us']:,.0f} us vs {kgedge['p50_us']:,.0f} us)",
                            "target": ">= 30x", "met": "yes" if speedup >= 30 else "no"})
            # what `kgedge compress` makes of any teacher by default (student "auto" = ComplEx), beside PyKEEN
            # serving that teacher: the same int8 ComplEx row against each other class's PyKEEN row
            if "ComplEx" in pairs:
                default = pairs["ComplEx"][0]
                others = {"DistMult": teacher, **{cls: pk for cls, (_, pk) in pairs.items() if cls != "ComplEx"}}
                for cls, pykeen in others.items():
                    if pykeen is None:
                        continue
                    speedup = _round_ratio(pykeen, default)
                    out.append({"goal": f"speedup of the default student of a {cls} teacher (int8 ComplEx, EdgeModel, "
                                        f"{config['width']} reals per row) over PyKEEN {cls} score_t + topk at dim 256, "
                                        "N=14,541",
                                "measured": f"{speedup:.1f}x ({pykeen['p50_us']:,.0f} us vs {default['p50_us']:,.0f} us)",
                                "target": ">= 30x", "met": "yes" if speedup >= 30 else "no"})
        else:
            out.append({"goal": "speedup over PyKEEN, N=14,541", "measured": str(config["checks"].get("pykeen", "not run")),
                        "target": ">= 30x", "met": "not measured"})
    for config in data["configs"]:
        if config["kind"] != "trained":
            continue
        for key, value in config["agreement"].items():
            out.append({"goal": f"top-10 agreement int8 vs fp32, {config['name']} {key}", "measured": f"{value:.4f}",
                        "target": ">= 0.99", "met": "yes" if value >= 0.99 else "no"})
    for config in data["configs"]:
        if config["kind"] != "random" or config["num_entities"] < 100_000:
            continue
        int8 = next((r for r in config["rows"] if r["family"] == "onnx" and r["precision"] == "int8"), None)
        fp32 = next((r for r in config["rows"] if r["family"] == "onnx" and r["precision"] == "fp32"), None)
        if int8 and fp32:
            speedup = fp32.get("ratio_to_int8_edge", fp32["p50_us"] / int8["p50_us"])
            out.append({"goal": f"int8 at least as fast as ONNX fp32 (EdgeModel), {config['name']}",
                        "measured": f"{speedup:.2f}x ({int8['p50_us']:,.0f} vs {fp32['p50_us']:,.0f} us)",
                        "target": ">= 1.0x", "met": "yes" if speedup >= 1.0 else "no"})
    return out


def findings(data: dict) -> list[str]:
    """Where the int8 graph and the runtime lose time, from the prototype rows (same run)."""
    lines = ["## Where the int8 path spends its time (diagnostic graphs, same run)", ""]
    steps = (
        ("bundle as shipped, EdgeModel.topk", "onnx random int8", "(EdgeModel)"),
        ("bundle as shipped, bare session.run", "onnx random int8", "(session.run)"),
        ("same graph, onnxruntime level basic", "graph: exported, onnxruntime level basic", ""),
        ("the graph as shipped before block scales (per-row scales)", "graph: per-row scales", ""),
    )
    configs = [c for c in data["configs"] if any(r["family"] == "prototype" for r in c["rows"])]
    if not configs:
        return []
    header = "| step | " + " | ".join(f"{c['name']} p50 us (/ limit)" for c in configs) + " |"
    lines += [header, "|---|" + "---:|" * len(configs)]
    for label, prefix, suffix in steps:
        cells = []
        for c in configs:
            row = next((r for r in c["rows"] if r["variant"].startswith(prefix) and suffix in r["variant"]), None)
            cells.append(f"{row['p50_us']:,.0f} ({row['ratio_to_limit']:.2f}x)" if row else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    profiled = [c for c in data["configs"] if c.get("op_profiles")]
    if profiled:
        lines += ["", "Per operator (onnxruntime's profiler, 1 thread, us per query; `(run)` is the whole run):", ""]
        for c in profiled:
            names = list(c["op_profiles"])
            ops = [op for op in next(iter(c["op_profiles"].values())) if op != "(run)"]
            for prof in c["op_profiles"].values():
                ops += [op for op in prof if op not in ops and op != "(run)"]
            keep = ["(run)"] + [op for op in ops if max(p.get(op, 0.0) for p in c["op_profiles"].values()) >= 0.02 * max(
                p.get("(run)", 1.0) for p in c["op_profiles"].values())]
            lines += [f"{c['name']}:", "", "| operator | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
            for op in keep:
                lines.append(f"| {op} | " + " | ".join(f"{c['op_profiles'][n].get(op, 0.0):,.0f}" for n in names) + " |")
            lines.append("")
        for c in profiled:
            for key, value in c["checks"].items():
                if key.startswith("runtime: one allowed_entities"):
                    lines.append(f"* {c['name']}: {key} = {value:,.0f} us")
    lines += ["", "From 200,000 entities on, a dot-product model's int8 table keeps one scale per block of rows "
              "(rows ordered by scale within each type run) instead of one per row, so the graph ranks the int32 "
              "products and scales only the block maxima and the candidates: no Cast and Mul over all N per query. "
              "Below that, the per-row graph ships (it was faster at 100k in the run that set the threshold); "
              "each ratio above uses the bytes its graph reads "
              "(per-row scales included), and the share of top-10 ids it has in common with the bundle's is in "
              "the checks.", ""]
    return lines


def _table(rows: list[dict], columns: list[tuple[str, str]]) -> list[str]:
    lines = ["| " + " | ".join(title for title, _ in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(row.get(key, "") if isinstance(row.get(key, ""), str) else _f(row.get(key))
                                       for _, key in columns) + " |")
    return lines


def write(data: dict, out: Path) -> None:
    machine = data["machine"]
    micro = data["micro"]
    lines = [
        "# Single-query latency: kgedge bundles, their peers and the physical limit", "",
        f"Run {data.get('finished_utc') or f'{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M}'} UTC by `{data['script']}` "
        f"in {data['seconds'] / 60:.0f} min "
        f"(args: {data['args']}).",
        f"Machine: {machine['cpu']} x{machine['cores']} ({', '.join(machine['cpu_flags'])}), "
        f"{machine['memory_bytes'] / 2**30:.0f} GiB, load average at start {machine['load_average']} "
        "(shared with other jobs: absolute times are noisy, ratios within one run are the figures to read). "
        f"python {machine['python']}, numpy {machine['numpy']}, onnxruntime {machine['onnxruntime']}, torch {machine['torch']}.",
        f"Everything at **1 thread**, top-{data['k']}, the same {data['queries']} queries for every variant, variants "
        "interleaved round by round; p50 = median of all samples, `round p50s` = the range of the per-round medians; "
        "ratios (to the limit, to int8) are medians of per-round ratios.", "",
        "## Goals", "",
        *_table(goals(data), [("goal", "goal"), ("measured", "measured"), ("target", "target"), ("met", "met")]), "",
        "## The machine's limits (same run)", "",
        f"* streaming read, one core, {micro['bandwidth_probe']['buffer_bytes'] // MIB} MiB buffer (>> 32 MiB L3): "
        + ", ".join(f"{k} {v / 1e9:.1f} GB/s" for k, v in micro['bandwidth_probe']['kernels'].items())
        + " (a probe at the start; the three kernels are re-timed inside every configuration's rounds and the "
        "fastest counts).",
        "* integer multiply-add rate, `MatMulInteger` u8 x u8, B prepacked and in cache: "
        f"{micro['mac_per_s']['int8_m1'] / 1e9:.1f} GMAC/s for one query (M=1), {micro['mac_per_s']['int8_m64'] / 1e9:.1f} "
        f"GMAC/s for a batch of 64; float `MatMul`: {micro['mac_per_s']['fp32_m1'] / 1e9:.1f} / "
        f"{micro['mac_per_s']['fp32_m64'] / 1e9:.1f} GMAC/s. At one query and N=1M, d=64 the integer products alone take "
        f"{64e6 / micro['mac_per_s']['int8_m1'] * 1e3:.1f} ms at that rate: one query is close to compute-bound as well as "
        "memory-bound on this AVX2 core (no VNNI).", "",
        "limit = table bytes / bandwidth + TopK over N (minus its call floor) + one `session.run` call, per configuration "
        "and **per round**: a variant's ratio to the limit is the median over rounds of (its p50 in that round / "
        "the limit measured in that round), because other jobs' memory traffic moves both. Medians over rounds:", "",
    ]
    limit_rows = []
    for c in data["configs"]:
        lim = c["limit"]
        limit_rows.append({"config": c["name"], "bw": f"{lim['bandwidth_bytes_per_s'] / 1e9:.1f}",
                           "int8": f"{lim['int8_table_bytes'] / MIB:.1f} MiB / {lim['int8_read_us']:,.0f} us",
                           "fp32": f"{lim['fp32_table_bytes'] / MIB:.1f} MiB / {lim['fp32_read_us']:,.0f} us",
                           "topk": f"{lim['topk_us']:,.0f}", "call": f"{lim['call_us']:,.1f}",
                           "limit": f"{lim['int8_limit_us']:,.0f}",
                           "cache_bw": f"{lim['table_sized_bandwidth_bytes_per_s'] / 1e9:.1f}",
                           "cache_limit": f"{lim['int8_limit_table_sized_us']:,.0f}"})
    lines += _table(limit_rows, [("configuration", "config"), ("DRAM bandwidth GB/s", "bw"), ("int8 table / read", "int8"),
                                 ("fp32 table / read", "fp32"), ("TopK us", "topk"), ("call us", "call"),
                                 ("int8 limit us", "limit"), ("table-sized read GB/s", "cache_bw"),
                                 ("int8 limit, table in cache, us", "cache_limit")])
    lines += ["", "The limit of the goals is the DRAM one (a buffer much larger than the cache). A table that fits "
              "in the 32 MiB L3 (int8 up to ~400k entities at d=64) is read faster than that after the first query: "
              "the last two columns give the same limit at the speed of reading a buffer of the int8 table's size, "
              "so a variant can beat the DRAM limit there (ratio < 1)."]
    lines += ["", "## Variants side by side", ""]
    for c in data["configs"]:
        lines += [f"### {c['name']}", ""]
        rows = []
        base = next((r for r in c["rows"] if r["family"] == "onnx" and r["precision"] == "int8"), None)
        for r in c["rows"]:
            if r["family"] == "limit":
                continue
            spread = r.get("ratio_to_limit_range")
            rows.append({**r, "rounds": f"{r['round_p50_min_us']:,.0f}-{r['round_p50_max_us']:,.0f}",
                         "ratio": (f"{r['ratio_to_limit']:.2f}x" + (f" ({spread[0]:.2f}-{spread[1]:.2f})" if spread else ""))
                         if "ratio_to_limit" in r else "",
                         "vs": f"{r.get('ratio_to_int8_edge', r['p50_us'] / base['p50_us']):.2f}x" if base else "",
                         "mb": f"{r['table_bytes'] / MIB:.2f}" if r.get("table_bytes") else "",
                         "mrr": f"{r['mrr']:.4f}" if "mrr" in r else "", "h10": f"{r['hits_at_10']:.4f}" if "hits_at_10" in r else "",
                         "r10": f"{r['recall_at_10_bought']:.4f}" if "recall_at_10_bought" in r else ""})
        columns = [("variant", "variant"), ("p50 us", "p50_us"), ("p95 us", "p95_us"), ("round p50s", "rounds"),
                   ("/ limit (round range)", "ratio"), ("/ int8 EdgeModel", "vs"), ("table MiB", "mb")]
        if c["kind"] == "trained":
            columns += [("MRR", "mrr"), ("Hits@10", "h10")]
            if any(r.get("r10") for r in rows):
                columns.append(("Recall@10 bought", "r10"))
        lines += _table(rows, columns)
        notes = [f"{k}: {v}" for k, v in c["checks"].items() if "validation" not in k and k != "bundle_bytes"]
        if c["agreement"]:
            notes.append("top-10 agreement int8 vs fp32 (EdgeModel ids): "
                         + ", ".join(f"{k} {v:.4f}" for k, v in c["agreement"].items()))
        lines += [""] + [f"* {n}" for n in notes] + [""]
    lines += findings(data)
    lines += ["## Growth with the entity count (`kgedge bench` in a fresh process per bundle, 1 thread)", ""]
    growth_rows = [{**g, "rss": f"{(g['rss_after_load_bytes'] - g['rss_before_load_bytes']) / MIB:,.0f}",
                    "peak": f"{g['peak_rss_bytes'] / MIB:,.0f}", "mb": f"{g['bundle_bytes'] / MIB:,.1f}",
                    "table": f"{g['table_bytes'] / MIB:,.1f}" if g.get("table_bytes") else "",
                    "load": f"{g['load_s']:.2f}", "n": f"{g['num_entities']:,}"} for g in data["growth"]]
    lines += _table(growth_rows, [("bundle", "bundle"), ("entities", "n"), ("width", "width"), ("profile", "profile"),
                                  ("p50 us", "p50_us"), ("p99 us", "p99_us"), ("q/s b=1", "qps_batch_1"),
                                  ("q/s b=256", "qps_batch_256"), ("bundle MiB", "mb"), ("table MiB", "table"),
                                  ("load s", "load"), ("RSS added MiB", "rss"), ("peak RSS MiB", "peak")])
    if data.get("memory"):
        lines += ["", "Where a loaded bundle's memory goes (fresh process, MiB): the onnxruntime session holds the table "
                  "about twice (the initializer, which the head-row Gather reads, and the product's prepacked copy of "
                  "it, fp32 and int8 alike); the entity names and their name -> id dict are Python objects, "
                  "more than the int8 table at 1M entities:", ""]
        mem_rows = [{"bundle": name, **{k: f"{v / MIB:,.1f}" for k, v in m.items()}} for name, m in data["memory"].items()]
        lines += _table(mem_rows, [("bundle", "bundle"), ("table (manifest)", "table_bytes"),
                                   ("read_bundle (files, names, arrays)", "read_bundle"),
                                   ("of which model.onnx (freed after load)", "model_onnx_bytes"),
                                   ("entity name -> id dict", "entity_vocabulary"),
                                   ("onnxruntime session", "onnxruntime_session")])
    lines += ["", "Plots: `latency_pareto.png` (latency and bytes against MRR, trained models), "
              "`latency_growth.png` (p50 and memory against N, d=64).", "",
              "Random-table rows are pure speed: their tables are drawn at random (no accuracy), their int8 bundles "
              "were exported with the top-k overlap gate off. Trained rows: ComplEx teacher dim 128 and its `default`-recipe "
              "student (dim 24, int8 QAT), both trained briefly (a time budget), so their MRR is that of a short run.", ""]
    (out / "latency_peers.md").write_text("\n".join(lines) + "\n")
    plots(data, out)


def plots(data: dict, out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    trained = [c for c in data["configs"] if c["kind"] == "trained"]
    if trained:
        fig, axes = plt.subplots(len(trained), 2, figsize=(13, 4.8 * len(trained)), squeeze=False)
        for row, c in zip(axes, trained):
            points = [r for r in c["rows"] if "mrr" in r]
            colors = plt.cm.tab10(np.linspace(0, 1, max(len(points), 1)))
            for ax, key, label in ((row[0], "p50_us", "p50 single-query latency (us, 1 thread)"),
                                   (row[1], "table_bytes", "entity table bytes as served")):
                for color, r in zip(colors, points):
                    marker = {"torch": "s", "onnx": "o", "numpy": "^"}.get(r["family"], "x")
                    ax.scatter(r[key], r["mrr"], marker=marker, s=70, color=color, label=r["variant"].replace(" (EdgeModel)", ""),
                               edgecolors="black", linewidths=0.5)
                frontier, best = [], -1.0
                for r in sorted(points, key=lambda r: (r[key], -r["mrr"])):
                    if r["mrr"] > best:
                        frontier.append((r[key], r["mrr"]))
                        best = r["mrr"]
                ax.step(*zip(*frontier), where="post", color="grey", linestyle="--", linewidth=1, label="Pareto front")
                ax.set_xscale("log")
                ax.set_xlabel(label)
                ax.set_ylabel("test MRR (filtered)")
                ax.set_title(c["name"])
                ax.grid(alpha=0.3)
            row[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
        fig.tight_layout()
        fig.savefig(out / "latency_pareto.png", dpi=110)
        plt.close(fig)
    sweep = sorted((c for c in data["configs"] if c["kind"] == "random" and c["width"] == 64), key=lambda c: c["num_entities"])
    if sweep:
        fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
        ns = [c["num_entities"] for c in sweep]
        series = {
            "torch fp32 (eager)": lambda c: _row(c, "torch random"),
            "numpy fp32": lambda c: _row(c, "numpy"),
            "onnx fp32 (EdgeModel)": lambda c: next((r for r in c["rows"] if r["family"] == "onnx" and r["precision"] == "fp32"), None),
            "onnx int8 (EdgeModel)": lambda c: next((r for r in c["rows"] if r["family"] == "onnx" and r["precision"] == "int8"), None),
            "onnx int8 (session.run)": lambda c: next((r for r in c["rows"] if r["family"] == "onnx-raw" and r["precision"] == "int8"), None),
        }
        for label, pick in series.items():
            values = [(c["num_entities"], pick(c)["p50_us"]) for c in sweep if pick(c)]
            if values:
                left.plot(*zip(*values), marker="o", label=label)
        left.plot(ns, [c["limit"]["int8_limit_us"] for c in sweep], "k--", label="int8 limit (same run)")
        left.plot(ns, [c["limit"]["fp32_limit_us"] for c in sweep], "k:", label="fp32 limit (same run)")
        left.set(xscale="log", yscale="log", xlabel="entities N (d=64)", ylabel="p50 latency (us, 1 thread)")
        left.legend(fontsize=8)
        left.grid(alpha=0.3)
        for profile in sorted({g["profile"] for g in data["growth"]}):
            mine = [g for g in data["growth"] if g["profile"] == profile and g["width"] == 64 and g["bundle"].startswith("random")]
            for key, style, label in ((lambda g: g["rss_after_load_bytes"] - g["rss_before_load_bytes"], "-o", "RSS added by the load"),
                                      (lambda g: g["peak_rss_bytes"], ":o", "peak RSS (incl. batch 256)"),
                                      (lambda g: g["bundle_bytes"], "--s", "bundle bytes")):
                points = sorted((g["num_entities"], key(g) / MIB) for g in mine)
                if points:
                    right.plot(*zip(*points), style, label=f"{label}, {profile}")
        right.set(xscale="log", yscale="log", xlabel="entities N (d=64)", ylabel="MiB")
        right.legend(fontsize=8)
        right.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "latency_growth.png", dpi=110)
        plt.close(fig)
