"""``validate --html``: the parity report as one self-contained HTML file.

Everything is inside the file: figures are PNGs embedded as base64 ``data:`` URIs, the style is
inline, there is no script and nothing is fetched.  Every number printed from the JSON report
carries ``data-key`` (its path in the JSON, as a JSON list of keys and indices) and
``data-value`` (its repr), so a reader (and the tests) can
check that the page says what the JSON says.  The resources and energy section renders the
report's ``plan``, ``activity`` and ``energy`` entries when the plan provides them.
"""
from __future__ import annotations

import base64
import html
import json

from .plots import layer_figure, passes_figure, png_bytes, raster_figure

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1180px;color:#222}
h1{font-size:22px;margin-bottom:2px}h3{font-size:14px;margin:12px 0 2px}h2{font-size:17px;border-bottom:1px solid #ccc;padding-bottom:3px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}.ok{color:#176e2c;font-weight:bold}.bad{color:#b00020;font-weight:bold}
.sub{color:#666;font-size:13px}figure{margin:10px 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:12px;color:#555}code{font-size:12px;background:#f6f6f6;padding:1px 3px}
"""


def _value(key, value, fmt: str = "{}") -> str:
    """A number from the JSON, tagged with its path (a dotted string of plain keys, or a list) and
    exact value."""
    path = [int(p) if p.isdigit() else p for p in key.split(".")] if isinstance(key, str) else list(key)
    tag = html.escape(json.dumps(path))
    if value is None:
        return f'<span data-key="{tag}" data-value="null">n/a</span>'
    return f'<span data-key="{tag}" data-value="{html.escape(repr(value))}">{html.escape(fmt.format(value))}</span>'


def _pct(key, value) -> str:
    return _value(key, value, "{:.2%}") if value is not None else _value(key, None)


def _figure(fig, caption: str, dpi: int = 90) -> str:
    data = base64.b64encode(png_bytes(fig, dpi)).decode()
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _kv_table(prefix: str, obj, depth: int = 0) -> str:
    """A nested dict as rows (dotted keys); lists of numbers inline."""
    rows = []

    def walk(path, value):
        name = html.escape(" / ".join(str(p) for p in path))
        if isinstance(value, dict):
            for k, v in value.items():
                walk(path + [k], v)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            rows.append(f'<tr><td class="l">{name}</td><td>{_value([prefix] + path, value, "{:.6g}")}</td></tr>')
        else:
            text = value if isinstance(value, str) else repr(value)
            rows.append(f'<tr><td class="l">{name}</td><td class="l">{html.escape(str(text)[:400])}</td></tr>')
    walk([], obj)
    return "<table>" + "".join(rows) + "</table>"


def _accuracy(r: dict) -> str:
    acc = r["accuracy"]
    stochastic = "mc_passes" in r
    head = "<tr><th class='l'>path</th><th>accuracy</th>" + ("<th>95 % interval</th><th>majority vote</th>" if stochastic else "") + "<th>samples</th></tr>"
    rows = []
    for side, label in (("float", "float PyTorch"), ("integer", "integer emulator")):
        row = f"<tr><td class='l'>{label}</td><td>{_pct(f'accuracy.{side}', acc[side])}</td>"
        if stochastic:
            lo, hi = acc[f"{side}_ci"]
            row += (f"<td>[{_value(f'accuracy.{side}_ci.0', lo, '{:.2%}')}, {_value(f'accuracy.{side}_ci.1', hi, '{:.2%}')}]</td>"
                    f"<td>{_pct(f'accuracy.{side}_majority_vote', acc[f'{side}_majority_vote'])}</td>")
        rows.append(row + f"<td>{_value('samples', r['samples'])}</td></tr>")
    lava = f"<tr><td class='l'>Lava Loihi2SimCfg fixed_pt</td><td>{_pct('accuracy.lava', acc['lava'])}</td>"
    lava += ("<td></td><td></td>" if stochastic else "") + f"<td>{_value('lava_samples', r['lava_samples'])}</td></tr>"
    rows.append(lava)
    if r["lava_samples"]:
        rows.append(f"<tr><td class='l'>integer on those samples</td><td>"
                    f"{_pct('accuracy.integer_on_lava_samples', acc['integer_on_lava_samples'])}</td>"
                    + ("<td></td><td></td>" if stochastic else "") + f"<td>{_value('lava_samples', r['lava_samples'])}</td></tr>")
    out = "<table>" + head + "".join(rows) + "</table>"
    if r["lava_samples"]:
        ok = r["lava_bit_exact"]
        verdict = (f"<span class='{'ok' if ok else 'bad'}' data-key='{html.escape(json.dumps(['lava_bit_exact']))}' "
                   f"data-value='{ok!r}'>{'bit-exact' if ok else 'DIFFERENT'}</span>")
        differs = "" if ok else " (" + html.escape(", ".join(r.get("lava_mismatches", []))) + ")"
        out += (f"<p>Lava vs emulator, every node output and logit: {verdict}{differs}; Lava shards: "
                f"{_value('lava_shards', r.get('lava_shards'))}, reused from the work folder: "
                f"{_value('lava_shards_reused', r.get('lava_shards_reused'))}.</p>")
    if stochastic:
        out += (f"<p class='sub'>{_value('mc_passes', r['mc_passes'])} Monte-Carlo passes per side, seed "
                f"{_value('seed', r['seed'])}, float uniforms: {html.escape(r.get('mc_rng', ''))}; majority votes agree on "
                f"{_pct('majority_vote_agreement', r['majority_vote_agreement'])} of samples.</p>")
    return out


def _layers(r: dict) -> str:
    rows = r["spike_nodes"]
    stochastic = "mc_passes" in r
    cols = (["firing_rate_float", "firing_rate_integer", "same_uniforms_spike_agreement",
             "same_uniforms_mismatches_per_float_spike", "probability_error_max", "probability_error_mean"]
            if stochastic else
            ["firing_rate_float", "firing_rate_integer", "spike_agreement_float_vs_integer", "mismatches_per_float_spike"]
            + (["spike_agreement_sdn_vs_lif", "sdn_mismatches_per_lif_spike"] if rows and "spike_agreement_sdn_vs_lif" in rows[0] else []))
    head = "<tr><th class='l'>spike node</th>" + "".join(f"<th>{c.replace('_', ' ')}</th>" for c in cols) + "</tr>"
    body = "".join("<tr><td class='l'>" + html.escape(row["node"]) + "</td>"
                   + "".join(f"<td>{_value(f'spike_nodes.{i}.{c}', row[c], '{:.5f}')}</td>" for c in cols) + "</tr>"
                   for i, row in enumerate(rows))
    note = ("<p class='sub'>probability error: |integer p - float p| of each sampler on the integer run's own inputs "
            "(2<sup>-8</sup> = 0.0039 is the aim); same-uniform columns: the float model fed the PRNG's uniforms, spike by "
            "spike against the integer run.</p>" if stochastic else
            "<p class='sub'>mismatches per float spike count every differing (channel, step) cell against the float spikes; "
            "silent cells do not flatter it.</p>")
    return "<table>" + head + body + "</table>" + note


def _raster(r: dict, program, raster) -> str:
    if not raster:
        return "<p>No raster sample.</p>"
    sides = {s: raster[s] for s in ("float", "integer", "lava") if s in raster}
    if not sides:
        return "<p>No raster sample.</p>"
    title = f"sample #{raster.get('sample')} (label {raster.get('label')})"
    return _figure(raster_figure(program, sides, title, label=raster.get("label"), raw=raster.get("input")),
                   f"{title}: spikes of every spike node, their drivers (LIF input current, or a sampler's firing "
                   "probability), and the readout (float: softmax probabilities; integer and Lava: logit / max|logit|) with "
                   "the prediction and the true label marked, above them the raw input; one column per "
                   "run (float, integer emulator, Lava).", dpi=80)


SIDE_NAMES = {"float": "float", "integer": "integer", "lava": "Lava"}
PLAN_COLUMNS = ("lowering", "placement", "neurons", "synapse_bytes", "state_bytes", "cores", "host_bytes_per_step")


OPERATION_ROWS = ("accumulates", "multiplies", "synaptic_events", "neuron_updates", "messages")


def _ops_table(rows: list) -> str:
    """Operation counts as a table: a row per (label, JSON path, {operation: count})."""
    cols = [c for c in OPERATION_ROWS if any(c in d for _, _, d in rows)]
    head = "<tr><th class='l'></th>" + "".join(f"<th>{c.replace('_', ' ')}</th>" for c in cols) + "</tr>"
    body = "".join(f"<tr><td class='l'>{html.escape(label)}</td>" + "".join(
        f"<td>{_value(path + [c], d[c], '{:,.0f}')}</td>" if c in d else "<td></td>" for c in cols) + "</tr>"
        for label, path, d in rows)
    return "<table>" + head + body + "</table>"


def _rows(pairs: list) -> str:
    """(label, cell html) pairs as a two-column table."""
    return "<table>" + "".join(f"<tr><td class='l'>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in pairs) + "</table>"


def _plan(plan: dict) -> str:
    """The plan's summary, its operation counts, its budgets, then one row per planned process."""
    out = f"<p class='sub'>{html.escape(str(plan.get('estimate', '')))}</p>"
    pairs = [(label, _value(["plan", key], plan[key], "{:,}" if isinstance(plan[key], int) else "{}"))
             for label, key in (("system", "system"), ("chips in the system", "system_chips"), ("chips needed", "chips"),
                                ("neurocores", "cores"),
                                ("latency (steps)", "latency_steps"), ("window (steps per sample)", "window_steps"),
                                ("bytes per step across the chip boundary", "host_bytes_per_step"))
             if key in plan]
    for key in ("fits", "memory_omitted"):
        if plan.get(key):
            pairs.append((key.replace("_", " "), html.escape(str(plan[key]))))
    out += _rows(pairs)
    ops = [(label, ["plan", key], plan[key]) for label, key in (("worst case per step", "worst_case_per_step"),
                                                               ("once per sample", "per_sample")) if plan.get(key)]
    if ops:
        out += "<h3>plan: operations</h3>" + _ops_table(ops)
    if plan.get("budgets"):
        b = plan["budgets"]
        out += "<h3>plan: budgets</h3>" + _rows(
            [(k.replace("_", " "), _value(["plan", "budgets", k], v, "{:,}")) for k, v in b.items()
             if isinstance(v, int) and not isinstance(v, bool)]
            + [("systems", html.escape(", ".join(f"{k}: {v:,} chips" for k, v in b.get("systems", {}).items())))])
    procs = plan.get("processes") or []
    if procs:
        cols = [c for c in PLAN_COLUMNS if c in procs[0]]
        out += ("<h3>plan: processes</h3><table><tr><th class='l'>process</th>" + "".join(
                    f"<th>{c.replace('_', ' ')}</th>" for c in cols) + "</tr>" + "".join(
                    "<tr><td class='l'>" + html.escape(str(p.get("name"))) + "</td>" + "".join(
                        f"<td>{_value(f'plan.processes.{i}.{c}', p[c], '{:,}')}</td>"
                        if isinstance(p.get(c), int) and not isinstance(p.get(c), bool)
                        else f"<td class='l'>{html.escape(str(p.get(c)))}</td>" for c in cols) + "</tr>"
                    for i, p in enumerate(procs)) + "</table>")
    return out


def _activity(a: dict) -> str:
    out = (f"<p class='sub'>Counted from the integer run over {_value(['activity', 'samples'], a.get('samples'))} "
           f"samples, per sample; the float model: {_value(['activity', 'float_macs_per_sample'], a.get('float_macs_per_sample'), '{:,}')} "
           "MACs per sample.</p>")
    rows = [("integer run, per sample", ["activity", "per_sample"], a.get("per_sample", {}))]
    rows += [(node, ["activity", "per_node", node], c) for node, c in a.get("per_node", {}).items()]
    out += _ops_table(rows)
    rates = a.get("firing_rates") or {}
    if rates:
        out += _rows([(f"firing rate {n}", _value(["activity", "firing_rates", n], v, "{:.4f}")) for n, v in rates.items()])
    return out


def _energy(e: dict) -> str:
    out = f"<p class='sub'>{html.escape(str(e.get('estimate', '')))}</p>"
    pairs = []
    for key, label in (("paper_45nm", "counted operations"), ("fft_baseline", "float model with an FFT convolution"),
                       ("paper_formula", "the paper's own formula")):
        d = e.get(key)
        if not d:
            continue
        ratio = _value(["energy", key, "ratio"], d.get("ratio"), "{:.2f}x")
        pairs.append((f"{label}: compiled vs float, per sample",
                      f"{_value(['energy', key, 'snn_pJ'], d.get('snn_pJ'), '{:,.0f}')} pJ vs "
                      f"{_value(['energy', key, 'ann_pJ'], d.get('ann_pJ'), '{:,.0f}')} pJ, float / compiled {ratio}"))
    for k in ("pJ_per_accumulate", "pJ_per_mac"):
        if k in e:
            pairs.append((k.replace("_", " "), _value(["energy", k], e[k])))
    for k in ("sources", "assumption"):
        if e.get(k):
            pairs.append((k, html.escape(str(e[k]))))
    f = e.get("paper_formula") or {}
    if f.get("formula"):
        pairs.append(("paper formula", html.escape(f["formula"])))
    return out + _rows(pairs)


def _resources(r: dict) -> str:
    parts = []
    if r.get("plan"):
        parts.append("<h3>Placement plan on Loihi 2 (estimate)</h3>" + (_plan(r["plan"]) if "processes" in r["plan"]
                                                                         else _kv_table("plan", r["plan"])))
    if r.get("activity"):
        parts.append("<h3>Activity of the integer run (measured)</h3>" + _activity(r["activity"]))
    if r.get("energy"):
        parts.append("<h3>Energy (45 nm CMOS estimate, not Loihi 2)</h3>" + _energy(r["energy"]))
    if not parts:
        return ("<p>Not provided: this report carries no <code>plan</code>, <code>activity</code> or <code>energy</code> "
                "entry.</p>")
    return ("<p class='sub'>Estimates, labelled as such: the plan from the Program's arrays and Loihi 2's public budgets; "
            "the energy from the measured activity and 45 nm CMOS figures (no per-operation energy of Loihi 2 is "
            "published).</p>" + "".join(parts))


def _cell(value) -> str:
    """A provenance value as text: a dict as key=value pairs, never a Python repr."""
    if isinstance(value, dict):
        return ", ".join(f"{k}={_cell(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return " ".join(_cell(v) for v in value)
    return str(value)


def _provenance(r: dict) -> str:
    p = r.get("provenance", {})
    rows = [("neurocompile", p.get("neurocompile")), ("torch", p.get("torch"))]
    if p.get("lava"):
        rows.append(("Lava (lava-nc)", p.get("lava")))
    rows += [("numpy", p.get("numpy")), ("python", p.get("python")),
             ("checkpoint", f"{r.get('checkpoint')}  sha256 {p.get('checkpoint_sha256')}"),
             ("artifact", f"{r.get('artifact')}  sha256 {p.get('artifact_sha256')}"),
             ("data", f"{r.get('dataset', {}).get('name')} / {r.get('dataset', {}).get('split')}  sha256 {p.get('data_sha256')}"),
             ("date (UTC)", p.get("date")), ("command line", p.get("command_line"))]
    rows = [(k, v) for k, v in rows if v is not None]
    rows += [(f"option {k}", v) for k, v in (p.get("options") or {}).items()]
    rows += [(f"execution {k}", v) for k, v in (r.get("execution") or {}).items()]
    if r.get("seconds") is not None:
        rows.append(("seconds", r["seconds"]))
    body = "".join(f"<tr><td class='l'>{html.escape(k)}</td><td class='l' "
                   f"data-field='{html.escape(k)}'><code>{html.escape(_cell(v))}</code></td></tr>" for k, v in rows)
    return "<table>" + body + "</table>"


def render_report(report: dict, program, raster: dict | None = None) -> str:
    """The HTML page of a validate report (``raster``: the traces of one sample, validate's
    ``report['raster']``, kept out of the JSON)."""
    r = report
    kind = program.model.get("kind", "")
    sections = [("Accuracy", _accuracy(r))]
    if "mc_passes" in r:
        sections.append(("Monte-Carlo passes", _figure(passes_figure(r), "accuracy of every pass, float and integer")))
    sections.append(("Per spike node", _layers(r) + _figure(layer_figure(r), "per spike node: firing rates float vs "
                                                             "integer, and the float-integer difference")))
    ran = [SIDE_NAMES[s] for s in ("float", "integer", "lava") if (raster or {}).get(s)]
    sections.append((f"One sample: {' vs '.join(ran) or 'no run recorded'}", _raster(r, program, raster)))
    sections.append(("Resources (Loihi 2 plan) and energy (45 nm estimate)", _resources(r)))
    sections.append(("Provenance", _provenance(r)))
    ds = r.get("dataset", {})
    body = "".join(f"<h2>{html.escape(t)}</h2>{content}" for t, content in sections)
    title = f"neurocompile parity report: {r.get('checkpoint', '')} on {ds.get('name', '')}"
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p class='sub'>{html.escape(kind)} model, artifact {html.escape(str(r.get('artifact', '')))}, "
            f"{html.escape(str(ds.get('split', '')))} split, device {html.escape(str(r.get('device', '')))}</p>"
            f"{body}</body></html>\n")
