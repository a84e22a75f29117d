// Counters and a latency histogram, rendered in the Prometheus text exposition format.

const BUCKETS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30];

export class Metrics {
  private readonly requests = new Map<string, number>();
  private readonly buckets = new Map<string, number[]>();
  private readonly sums = new Map<string, number>();
  manifestGets = 0;
  blobGets = 0;
  blobBytesOut = 0;
  blobBytesIn = 0;
  gcRuns = 0;
  gcBlobsDeleted = 0;
  gcManifestsDeleted = 0;
  private readonly started = Date.now();

  request(method: string, route: string, status: number, seconds: number): void {
    const key = `method="${method}",route="${route}",status="${status}"`;
    this.requests.set(key, (this.requests.get(key) ?? 0) + 1);
    const hkey = `route="${route}"`;
    let b = this.buckets.get(hkey);
    if (!b) this.buckets.set(hkey, (b = new Array(BUCKETS.length + 1).fill(0)));
    let i = BUCKETS.findIndex((x) => seconds <= x);
    if (i < 0) i = BUCKETS.length;
    b[i]++;
    this.sums.set(hkey, (this.sums.get(hkey) ?? 0) + seconds);
  }

  render(): string {
    const out: string[] = [];
    const counter = (name: string, help: string, v: number) => out.push(`# HELP ${name} ${help}`, `# TYPE ${name} counter`, `${name} ${v}`);
    out.push("# HELP strata_registry_http_requests_total HTTP requests by method, route and status.", "# TYPE strata_registry_http_requests_total counter");
    for (const [k, v] of this.requests) out.push(`strata_registry_http_requests_total{${k}} ${v}`);
    out.push("# HELP strata_registry_http_request_duration_seconds Request latency by route.", "# TYPE strata_registry_http_request_duration_seconds histogram");
    for (const [k, b] of this.buckets) {
      let acc = 0;
      BUCKETS.forEach((le, i) => {
        acc += b[i];
        out.push(`strata_registry_http_request_duration_seconds_bucket{${k},le="${le}"} ${acc}`);
      });
      acc += b[BUCKETS.length];
      out.push(`strata_registry_http_request_duration_seconds_bucket{${k},le="+Inf"} ${acc}`);
      out.push(`strata_registry_http_request_duration_seconds_sum{${k}} ${this.sums.get(k) ?? 0}`);
      out.push(`strata_registry_http_request_duration_seconds_count{${k}} ${acc}`);
    }
    counter("strata_registry_manifest_gets_total", "Manifests served.", this.manifestGets);
    counter("strata_registry_blob_gets_total", "Blob bodies served.", this.blobGets);
    counter("strata_registry_blob_bytes_sent_total", "Blob bytes sent.", this.blobBytesOut);
    counter("strata_registry_blob_bytes_received_total", "Blob bytes received by uploads.", this.blobBytesIn);
    counter("strata_registry_gc_runs_total", "Garbage collections completed.", this.gcRuns);
    counter("strata_registry_gc_blobs_deleted_total", "Blobs removed by garbage collection.", this.gcBlobsDeleted);
    counter("strata_registry_gc_manifests_deleted_total", "Untagged manifests removed by garbage collection.", this.gcManifestsDeleted);
    out.push("# HELP process_resident_memory_bytes Resident memory size in bytes.", "# TYPE process_resident_memory_bytes gauge", `process_resident_memory_bytes ${process.memoryUsage.rss()}`);
    out.push("# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.", "# TYPE process_start_time_seconds gauge", `process_start_time_seconds ${Math.floor(this.started / 1000)}`);
    return out.join("\n") + "\n";
  }
}
