"""Writes `make bench` results: the JSON file, and the tables of docs/benchmarks.md between
its `bench:begin` and `bench:end` markers (the text around them is kept)."""

import datetime
import json
import os
import platform
import subprocess
import sys

results_dir, json_out, markdown = sys.argv[1:4]


def load(name):
    with open(os.path.join(results_dir, f"{name}.json")) as f:
        return json.load(f)


def machine():
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    return {"cpu": model, "cores": os.cpu_count(), "memory_gib": round(mem_kib / 2**20, 1),
            "kernel": platform.release()}


def commit():
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True)
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


raw = load("raw")
runs = {name: load(name) for name in ("passthrough", "validated", "snowflake")}
latency = sorted((load(f[:-5]) for f in os.listdir(results_dir) if f.startswith("latency-")),
                 key=lambda r: r["target_events_per_s"])
tenants = load("tenants")
passthrough, validated = runs["passthrough"]["events_per_s"], runs["validated"]["events_per_s"]
p99_at_10k = next((r["visible_p99_ms"] for r in latency if r["target_events_per_s"] == 10000), None)
goals = [
    ("floe + validator → DuckDB ≥ 50% of raw", validated / raw["events_per_s"] >= 0.5,
     f"{validated / raw['events_per_s']:.2f} × raw"),
    ("floe + validator → DuckDB ≥ 150k events/s", validated >= 150_000, f"{validated:,} events/s"),
    ("p99 produce → visible ≤ 1 s at 10k events/s", p99_at_10k is not None and p99_at_10k <= 1000,
     f"{p99_at_10k} ms"),
    ("validator costs ≤ 20% of pass-through", 1 - validated / passthrough <= 0.2,
     f"{1 - validated / passthrough:.1%}"),
    (f"RSS ≤ 300 MiB with {tenants['tenants']} tenants × 1 validator", tenants["rss_mib"] <= 300,
     f"{tenants['rss_mib']} MiB (peak {tenants['peak_rss_mib']} MiB)"),
    ("2 MB component upload → live ≤ 1 s", tenants["upload_to_live_ms"] <= 1000,
     f"{tenants['upload_to_live_ms']} ms"),
    ("a restart does not recompile", tenants["compiled_on_restart"] == 0,
     f"{tenants['compiled_on_restart']} compiled"),
]
report = {
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%MZ"),
    "commit": commit(), "machine": machine(), "raw": raw, **runs, "latency": latency,
    "tenants": tenants,
    "goals": [{"goal": g, "met": met, "measured": m} for g, met, m in goals],
}
with open(json_out, "w") as f:
    json.dump(report, f, indent=2)
    f.write("\n")

m = report["machine"]
lines = [
    f"Measured {report['date']} at commit `{report['commit']}` on {m['cpu']}, {m['cores']} cores, "
    f"{m['memory_gib']} GiB (Linux {m['kernel']}); broker and floe on the same cores.",
    "",
    "| run | events/s | vs raw | CPU-s per 1M events | peak RSS |",
    "|---|---|---|---|---|",
    f"| (a) raw consume + `serde_json::Value` parse | {raw['events_per_s']:,} | 1.00 | | |",
]
names = {"passthrough": "(b) floe → DuckDB, pass-through",
         "validated": "(c) floe + `transactions-validator` → DuckDB",
         "snowflake": "(d) floe → Snowflake emulator (fakesnow)"}
for key, label in names.items():
    r = runs[key]
    lines.append(f"| {label} | {r['events_per_s']:,} | {r['events_per_s'] / raw['events_per_s']:.2f} "
                 f"| {r['cpu_seconds_per_million']} | {r['peak_rss_mib']} MiB |")
lines += ["", "| produce rate (target) | achieved | rows measured | to load start p50 / p99 / max "
          "| to visible (commit) p50 / p99 | table rows |",
          "|---|---|---|---|---|---|"]
for r in latency:
    lines.append(f"| {r['target_events_per_s']:,}/s | {r['produced_events_per_s']:,}/s | "
                 f"{r['rows_measured']:,} | {r['p50_ms']} / {r['p99_ms']} / {r['max_ms']} ms | "
                 f"{r['visible_p50_ms']} / {r['visible_p99_ms']} ms | {r['table_rows']:,} |")
lines += ["", f"{tenants['tenants']} tenants × 1 validator: RSS {tenants['rss_mib']} MiB "
          f"(peak {tenants['peak_rss_mib']} MiB). A {tenants['component_bytes']:,}-byte component: "
          f"upload → live {tenants['upload_to_live_ms']} ms. A restart with all of them: ready in "
          f"{tenants['restart_to_ready_ms']} ms, {tenants['compiled_on_restart']} components compiled.", "",
          "| goal | met | measured |", "|---|---|---|"]
lines += [f"| {g} | {'yes' if met else '**no**'} | {v} |" for g, met, v in goals]

with open(markdown) as f:
    text = f.read()
begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
head, rest = text.split(begin, 1)
_, tail = rest.split(end, 1)
with open(markdown, "w") as f:
    f.write(head + begin + "\n" + "\n".join(lines) + "\n" + end + tail)
print("\n".join(lines))
