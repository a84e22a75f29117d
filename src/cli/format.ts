/** Docker's human sizes: decimal units, three significant digits ("1.99MB", "77.8MB"). */
export function humanSize(bytes: number): string {
  const units = ["B", "kB", "MB", "GB", "TB", "PB"];
  let v = bytes;
  let i = 0;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${Number(v.toPrecision(3))}${units[i]}`;
}

/** Docker's human durations (go-units HumanDuration). */
export function humanDuration(ms: number): string {
  const seconds = Math.floor(ms / 1000);
  if (seconds < 1) return "Less than a second";
  if (seconds === 1) return "1 second";
  if (seconds < 60) return `${seconds} seconds`;
  const minutes = Math.floor(ms / 60000);
  if (minutes === 1) return "About a minute";
  if (minutes < 60) return `${minutes} minutes`;
  const hours = Math.round(ms / 3600000);
  if (hours === 1) return "About an hour";
  if (hours < 48) return `${hours} hours`;
  if (hours < 24 * 7 * 2) return `${Math.floor(hours / 24)} days`;
  if (hours < 24 * 30 * 2) return `${Math.floor(hours / 24 / 7)} weeks`;
  if (hours < 24 * 365 * 2) return `${Math.floor(hours / 24 / 30)} months`;
  return `${Math.floor(hours / 24 / 365)} years`;
}

export function since(iso: string | undefined, now = Date.now()): string {
  if (!iso) return "N/A";
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return "N/A";
  return `${humanDuration(Math.max(0, now - t))} ago`;
}

/** Left-aligned columns as Docker's tabwriter lays them out: cells at least 10 wide, 3 spaces of padding. */
export function table(headers: string[], rows: string[][]): string {
  return align([headers, ...rows]);
}

function align(rows: string[][]): string {
  const n = Math.max(...rows.map((r) => r.length));
  const widths = Array.from({ length: n }, (_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(Math.max(widths[i] + 3, 10)))).join("").trimEnd();
  return rows.map(line).join("\n") + "\n";
}

/**
 * A small subset of Go templates for `--format`: `{{.Field}}`, `{{.A.B}}`, `{{json .}}`,
 * `{{json .Field}}`, and a leading `table` for a header row.
 */
export function renderTemplate(tpl: string, rows: Record<string, unknown>[]): string {
  const t = tpl.replace(/\\t/g, "\t").replace(/\\n/g, "\n");
  const isTable = /^table\s/.test(t);
  const body = isTable ? t.replace(/^table\s+/, "") : t;
  const one = (row: Record<string, unknown>, header = false) =>
    body.replace(/\{\{\s*(json\s+)?\.([\w.]*)\s*\}\}/g, (_m, json: string | undefined, field: string) => {
      if (header) return field.replace(/([a-z])([A-Z])/g, "$1 $2").toUpperCase();
      const v = field === "" ? row : field.split(".").reduce<unknown>((o, k) => (o && typeof o === "object" ? (o as Record<string, unknown>)[k] : undefined), row);
      if (json) return JSON.stringify(v);
      if (v === undefined || v === null) return "<no value>";
      return typeof v === "object" ? JSON.stringify(v) : String(v);
    });
  const lines = rows.map((r) => one(r));
  if (!isTable) return lines.map((l) => l + "\n").join("");
  lines.unshift(one({}, true));
  return align(lines.map((l) => l.split("\t")));
}
